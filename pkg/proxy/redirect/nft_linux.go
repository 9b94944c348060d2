package redirect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftTimeout bounds one netlink exchange when ctx has no earlier deadline. A
// kernel without nf_tables answers a batch with a single error, after which
// the library would wait for more answers forever.
const nftTimeout = 10 * time.Second

// InstallNFT installs rulesets over netlink in the current network namespace,
// in one nftables transaction: for each family our table is created if
// missing, deleted with everything in it, and made anew. Either every table
// is in place afterwards or nothing changed. It needs CAP_NET_ADMIN and no
// program.
func InstallNFT(ctx context.Context, rulesets []Ruleset) error {
	deadline := time.Now().Add(nftTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn, err := nftables.New(nftables.WithSockOptions(func(c *netlink.Conn) error { return c.SetDeadline(deadline) }))
	if err != nil {
		return nftError(err)
	}
	for _, rs := range rulesets {
		addNFTRuleset(conn, rs)
	}
	if err := conn.Flush(); err != nil {
		return nftError(err)
	}
	return nil
}

// addNFTRuleset queues the messages that replace our table of rs's family.
func addNFTRuleset(conn *nftables.Conn, rs Ruleset) {
	family := nftables.TableFamilyIPv4
	if rs.Family == IPv6 {
		family = nftables.TableFamilyIPv6
	}
	table := &nftables.Table{Name: NFTTable, Family: family}
	// Adding an existing table is not an error, deleting a missing one is:
	// add, delete, add makes the table new whether or not it was there.
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)

	chains := make(map[string]*nftables.Chain, len(rs.Chains))
	for _, c := range rs.Chains {
		chain := &nftables.Chain{Name: c.Name, Table: table}
		if c.Hook != "" {
			accept := nftables.ChainPolicyAccept
			chain.Type, chain.Priority, chain.Policy = nftables.ChainTypeNAT, nftables.ChainPriorityNATDest, &accept
			chain.Hooknum = nftables.ChainHookPrerouting
			if c.Hook == HookOutput {
				chain.Hooknum = nftables.ChainHookOutput
			}
		}
		chains[c.Name] = conn.AddChain(chain)
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, one := range nftRules(r) {
				rule := &nftables.Rule{Table: table, Chain: chains[c.Name], Exprs: nftExprs(rs.Family, one)}
				if one.Comment != "" {
					rule.UserData = userdata.AppendString(nil, userdata.TypeComment, one.Comment)
				}
				conn.AddRule(rule)
			}
		}
	}
}

// nftExprs encodes one rule (with at most one port range) as nftables
// expressions, statement by statement in the order of nftRuleText.
func nftExprs(f Family, r Rule) []expr.Any {
	var e []expr.Any
	cmp := func(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	if r.TCP { // meta l4proto tcp
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp([]byte{unix.IPPROTO_TCP}))
	}
	if r.OwnerUID != nil { // meta skuid UID
		e = append(e, &expr.Meta{Key: expr.MetaKeySKUID, Register: 1}, cmp(binaryutil.NativeEndian.PutUint32(*r.OwnerUID)))
	}
	if r.Dst.IsValid() { // ip daddr PREFIX
		offset, size := uint32(16), uint32(4) // IPv4 header: daddr at 16
		if f == IPv6 {
			offset, size = 24, 16 // IPv6 header: daddr at 24
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size})
		if bits := r.Dst.Bits(); bits < r.Dst.Addr().BitLen() {
			mask := make([]byte, size)
			for i := 0; i < bits; i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
		}
		e = append(e, cmp(r.Dst.Masked().Addr().AsSlice()))
	}
	if r.OutInterface != "" { // oifname "NAME"
		name := make([]byte, unix.IFNAMSIZ)
		copy(name, r.OutInterface)
		e = append(e, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, cmp(name))
	}
	if len(r.DstPorts) == 1 { // tcp dport FIRST[-LAST]
		p := r.DstPorts[0]
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		if p.First == p.Last {
			e = append(e, cmp(binaryutil.BigEndian.PutUint16(p.First)))
		} else {
			e = append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1,
				FromData: binaryutil.BigEndian.PutUint16(p.First), ToData: binaryutil.BigEndian.PutUint16(p.Last)})
		}
	}
	switch r.Action.Kind {
	case Return:
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case Jump:
		e = append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.Action.Chain})
	case Redirect: // redirect to :PORT
		e = append(e, &expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Action.Port)},
			&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})
	}
	return e
}

// nftError sorts a netlink failure: no permission, no nf_tables support in
// the kernel, or anything else.
func nftError(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: nftables cannot change this network namespace (%w)", ErrPermission, err)
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOENT),
		errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("%w in this kernel (netlink: %w)", ErrNFTablesUnavailable, err)
	}
	return fmt.Errorf("installing the nftables ruleset over netlink: %w", err)
}
