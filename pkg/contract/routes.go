package contract

// Outbound routing (issue 14): the annotations the controller reads on
// Services and on Gateway API HTTPRoutes/GRPCRoutes whose parent is a
// Service, and translates into the proxy's route table
// (conduit.destination.v1.OutboundRoutes). The proxy never reads them
// itself; their names live here so that documentation, the CLI and the
// controller spell them once.
const (
	// AnnotationRetryHTTP lists the HTTP response statuses retried, comma
	// separated: "503", "500-504", "gateway-error" (502-504) or "5xx". On a
	// Service or an HTTPRoute.
	AnnotationRetryHTTP = "retry.conduit.io/http"
	// AnnotationRetryGRPC lists the gRPC status codes retried, comma
	// separated, as Linkerd spells them: cancelled, deadline-exceeded,
	// internal, resource-exhausted, unavailable (any code's name in lower
	// case with dashes is accepted). On a Service or a GRPCRoute.
	AnnotationRetryGRPC = "retry.conduit.io/grpc"
	// AnnotationRetryLimit is how many retries a request may get (default
	// 1 once any retry annotation is set).
	AnnotationRetryLimit = "retry.conduit.io/limit"
	// AnnotationRetryTimeout bounds each try, a duration such as "500ms".
	AnnotationRetryTimeout = "retry.conduit.io/timeout"
	// AnnotationTimeoutRequest bounds a whole request (retries included),
	// a duration such as "10s": on a Service, for requests no route rule
	// matches; on a route, for the rules without timeouts.request.
	AnnotationTimeoutRequest = "timeout.conduit.io/request"

	// AnnotationFailureAccrual on a Service turns on circuit breaking of its
	// endpoints; the only value is FailureAccrualConsecutive.
	AnnotationFailureAccrual  = "balancer.conduit.io/failure-accrual"
	FailureAccrualConsecutive = "consecutive"
	// The parameters of consecutive failure accrual, on the Service: the
	// failures in a row that take an endpoint out (default 7), the first
	// and the longest penalty (durations, default 1s and 1m) and the share
	// by which each penalty is jittered (default 0.5).
	AnnotationFailureAccrualMaxFailures = "balancer.conduit.io/failure-accrual-consecutive-max-failures"
	AnnotationFailureAccrualMinPenalty  = "balancer.conduit.io/failure-accrual-consecutive-min-penalty"
	AnnotationFailureAccrualMaxPenalty  = "balancer.conduit.io/failure-accrual-consecutive-max-penalty"
	AnnotationFailureAccrualJitterRatio = "balancer.conduit.io/failure-accrual-consecutive-jitter-ratio"

	// RouteControllerName is the controllerName of the route status
	// entries (status.parents[]) the controller writes for the Services a
	// route names as parents.
	RouteControllerName = "conduit.io/controller"

	// RouteStatusLease is the Lease (coordination.k8s.io, in the control
	// plane's namespace) that elects the controller replica writing the
	// routes' status; the chart's Role grants it.
	RouteStatusLease = "conduit-route-status"
)
