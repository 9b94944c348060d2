package redirect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nftTimeout bounds the netlink exchange when ctx has no earlier deadline.
const nftTimeout = 10 * time.Second

// InstallNFT installs rulesets over netlink in the current network namespace,
// in one nftables transaction (a netlink batch): for each family our table
// is created if missing, deleted with everything in it, and made anew.
// Either every table is in place afterwards or nothing changed. It needs
// CAP_NET_ADMIN and no program.
//
// The messages are encoded here, with the kernel's nf_tables UAPI
// (linux/netfilter/nf_tables.h) and nothing else, because this code is
// linked into the proxy too: a netlink library would add about 400 KB to
// the binary, which is mostly paged in, so the proxy's RSS would grow by
// more than that for code it never runs. The tests read the result back
// with github.com/google/nftables and the nft program.
func InstallNFT(ctx context.Context, rulesets []Ruleset) error {
	deadline := time.Now().Add(nftTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var b nlBatch
	for _, rs := range rulesets {
		b.addRuleset(rs)
	}
	if err := b.send(deadline); err != nil {
		return nftError(err)
	}
	return nil
}

// nlBatch is an nftables transaction being built: netlink messages, and
// what each one does, to name a message the kernel refuses.
type nlBatch struct {
	msgs [][]byte
	what []string
}

// add appends an nf_tables message of type typ for family with attrs. Every
// message asks for an acknowledgement, so the kernel answers each one.
func (b *nlBatch) add(what string, typ uint16, flags uint16, family uint8, attrs ...[]byte) {
	b.msgs = append(b.msgs, nlMessage(unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags, family, 0, attrs...))
	b.what = append(b.what, what)
}

// nlMessage is a netlink header, the nfnetlink header and attrs. The
// sequence number is set when the batch is sent.
func nlMessage(typ, flags uint16, family uint8, resID uint16, attrs ...[]byte) []byte {
	m := make([]byte, 20, 64)
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], flags)
	m[16] = family                            // nfgenmsg.nfgen_family
	binary.BigEndian.PutUint16(m[18:], resID) // nfgenmsg.res_id; version 0
	for _, a := range attrs {
		m = append(m, a...)
	}
	binary.NativeEndian.PutUint32(m[0:], uint32(len(m)))
	return m
}

// attr is one netlink attribute, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	a := make([]byte, 4, 4+len(data)+3)
	binary.NativeEndian.PutUint16(a[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, data...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

// nested is an attribute holding attributes.
func nested(typ uint16, children ...[]byte) []byte {
	var data []byte
	for _, c := range children {
		data = append(data, c...)
	}
	return attr(typ|unix.NLA_F_NESTED, data)
}

func str(s string) []byte { return append([]byte(s), 0) }

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// be32i is a signed value (a priority, a verdict code) in two's complement.
func be32i(v int32) []byte { return be32(uint32(v)) }

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// addRuleset queues the messages that replace our table of rs's family.
func (b *nlBatch) addRuleset(rs Ruleset) {
	family := uint8(unix.NFPROTO_IPV4)
	if rs.Family == IPv6 {
		family = unix.NFPROTO_IPV6
	}
	table := attr(unix.NFTA_TABLE_NAME, str(NFTTable))
	name := "table " + rs.Family.nftFamily() + " " + NFTTable
	// Adding an existing table is not an error, deleting a missing one is:
	// add, delete, add makes the table new whether or not it was there.
	b.add("add "+name, unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, family, table)
	b.add("delete "+name, unix.NFT_MSG_DELTABLE, 0, family, table)
	b.add("add "+name, unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, family, table)

	for _, c := range rs.Chains {
		attrs := [][]byte{attr(unix.NFTA_CHAIN_TABLE, str(NFTTable)), attr(unix.NFTA_CHAIN_NAME, str(c.Name))}
		if c.Hook != "" {
			hook := uint32(unix.NF_INET_PRE_ROUTING)
			if c.Hook == HookOutput {
				hook = unix.NF_INET_LOCAL_OUT
			}
			attrs = append(attrs,
				nested(unix.NFTA_CHAIN_HOOK,
					attr(unix.NFTA_HOOK_HOOKNUM, be32(hook)),
					attr(unix.NFTA_HOOK_PRIORITY, be32i(nftNATPriority))),
				attr(unix.NFTA_CHAIN_POLICY, be32(nfAccept)),
				attr(unix.NFTA_CHAIN_TYPE, str("nat")))
		}
		b.add("add chain "+c.Name+" to "+name, unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, family, attrs...)
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, one := range nftRules(r) {
				attrs := [][]byte{
					attr(unix.NFTA_RULE_TABLE, str(NFTTable)),
					attr(unix.NFTA_RULE_CHAIN, str(c.Name)),
					nested(unix.NFTA_RULE_EXPRESSIONS, nftExprs(rs.Family, one)...),
				}
				if one.Comment != "" {
					// libnftnl's user data: a type-length-value comment,
					// NUL-terminated, as nft writes and lists it.
					comment := str(one.Comment)
					attrs = append(attrs, attr(unix.NFTA_RULE_USERDATA, append([]byte{0 /* NFTNL_UDATA_RULE_COMMENT */, byte(len(comment))}, comment...)))
				}
				b.add(fmt.Sprintf("add rule %q to %s chain %s", nftRuleText(rs.Family, one), name, c.Name),
					unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, family, attrs...)
			}
		}
	}
}

// nftNATPriority is iptables' nat priority (NF_IP_PRI_NAT_DST), which nft
// calls dstnat.
const nftNATPriority = -100

// nfAccept is NF_ACCEPT, the policy of our base chains.
const nfAccept = 1

// expression is one element of a rule's expression list.
func expression(name string, data ...[]byte) []byte {
	return nested(unix.NFTA_LIST_ELEM, attr(unix.NFTA_EXPR_NAME, str(name)), nested(unix.NFTA_EXPR_DATA, data...))
}

// reg1 is the register every match loads into and compares.
func reg1() []byte { return be32(unix.NFT_REG_1) }

func metaLoad(key uint32) []byte {
	return expression("meta", attr(unix.NFTA_META_DREG, reg1()), attr(unix.NFTA_META_KEY, be32(key)))
}

func payloadLoad(base, offset, size uint32) []byte {
	return expression("payload", attr(unix.NFTA_PAYLOAD_DREG, reg1()), attr(unix.NFTA_PAYLOAD_BASE, be32(base)),
		attr(unix.NFTA_PAYLOAD_OFFSET, be32(offset)), attr(unix.NFTA_PAYLOAD_LEN, be32(size)))
}

func value(typ uint16, data []byte) []byte { return nested(typ, attr(unix.NFTA_DATA_VALUE, data)) }

func cmpEq(data []byte) []byte {
	return expression("cmp", attr(unix.NFTA_CMP_SREG, reg1()), attr(unix.NFTA_CMP_OP, be32(unix.NFT_CMP_EQ)), value(unix.NFTA_CMP_DATA, data))
}

func verdict(code int32, chain string) []byte {
	v := [][]byte{attr(unix.NFTA_VERDICT_CODE, be32i(code))}
	if chain != "" {
		v = append(v, attr(unix.NFTA_VERDICT_CHAIN, str(chain)))
	}
	return expression("immediate", attr(unix.NFTA_IMMEDIATE_DREG, be32(unix.NFT_REG_VERDICT)),
		nested(unix.NFTA_IMMEDIATE_DATA, nested(unix.NFTA_DATA_VERDICT, v...)))
}

// nftExprs encodes one rule (with at most one port range) as nftables
// expressions, statement by statement in the order of nftRuleText.
func nftExprs(f Family, r Rule) [][]byte {
	var e [][]byte
	if r.TCP { // meta l4proto tcp
		e = append(e, metaLoad(unix.NFT_META_L4PROTO), cmpEq([]byte{unix.IPPROTO_TCP}))
	}
	if r.OwnerUID != nil { // meta skuid UID (host byte order)
		e = append(e, metaLoad(unix.NFT_META_SKUID), cmpEq(binary.NativeEndian.AppendUint32(nil, *r.OwnerUID)))
	}
	if r.Dst.IsValid() { // ip daddr PREFIX
		offset, size := uint32(16), uint32(4) // IPv4 header: daddr at 16
		if f == IPv6 {
			offset, size = 24, 16 // IPv6 header: daddr at 24
		}
		e = append(e, payloadLoad(unix.NFT_PAYLOAD_NETWORK_HEADER, offset, size))
		if bits := r.Dst.Bits(); bits < r.Dst.Addr().BitLen() {
			mask := make([]byte, size)
			for i := 0; i < bits; i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			e = append(e, expression("bitwise", attr(unix.NFTA_BITWISE_SREG, reg1()), attr(unix.NFTA_BITWISE_DREG, reg1()),
				attr(unix.NFTA_BITWISE_LEN, be32(size)), value(unix.NFTA_BITWISE_MASK, mask), value(unix.NFTA_BITWISE_XOR, make([]byte, size))))
		}
		e = append(e, cmpEq(r.Dst.Masked().Addr().AsSlice()))
	}
	if r.OutInterface != "" { // oifname "NAME", compared NUL-padded
		name := make([]byte, unix.IFNAMSIZ)
		copy(name, r.OutInterface)
		e = append(e, metaLoad(unix.NFT_META_OIFNAME), cmpEq(name))
	}
	if len(r.DstPorts) == 1 { // tcp dport FIRST[-LAST]
		p := r.DstPorts[0]
		e = append(e, payloadLoad(unix.NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2))
		if p.First == p.Last {
			e = append(e, cmpEq(be16(p.First)))
		} else {
			e = append(e, expression("range", attr(unix.NFTA_RANGE_SREG, reg1()), attr(unix.NFTA_RANGE_OP, be32(unix.NFT_RANGE_EQ)),
				value(unix.NFTA_RANGE_FROM_DATA, be16(p.First)), value(unix.NFTA_RANGE_TO_DATA, be16(p.Last))))
		}
	}
	switch r.Action.Kind {
	case Return:
		e = append(e, verdict(unix.NFT_RETURN, ""))
	case Jump:
		e = append(e, verdict(unix.NFT_JUMP, r.Action.Chain))
	case Redirect: // redirect to :PORT
		e = append(e,
			expression("immediate", attr(unix.NFTA_IMMEDIATE_DREG, reg1()), value(unix.NFTA_IMMEDIATE_DATA, be16(r.Action.Port))),
			expression("redir", attr(unix.NFTA_REDIR_REG_PROTO_MIN, reg1()), attr(unix.NFTA_REDIR_FLAGS, be32(unix.NF_NAT_RANGE_PROTO_SPECIFIED))))
	}
	return e
}

// send runs the batch: begin, the messages, end, in one write, then reads
// the kernel's answer to every message. The first refusal is the error, and
// the kernel has then rolled the whole batch back.
func (b *nlBatch) send(deadline time.Time) error {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("opening a netfilter netlink socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("binding the netlink socket: %w", err)
	}
	timeout := syscall.NsecToTimeval(max(time.Until(deadline), time.Millisecond).Nanoseconds())
	for _, opt := range []int{syscall.SO_RCVTIMEO, syscall.SO_SNDTIMEO} {
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &timeout); err != nil {
			return fmt.Errorf("setting the netlink socket's timeout: %w", err)
		}
	}

	seq := uint32(time.Now().Unix())
	var out []byte
	put := func(m []byte) uint32 {
		seq++
		binary.NativeEndian.PutUint32(m[8:], seq)
		out = append(out, m...)
		return seq
	}
	begin := put(nlMessage(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES))
	pending := make(map[uint32]string, len(b.msgs))
	for i, m := range b.msgs {
		pending[put(m)] = b.what[i]
	}
	put(nlMessage(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES))
	if err := syscall.Sendto(fd, out, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending the nftables batch: %w", err)
	}

	buf := make([]byte, 64<<10)
	for len(pending) > 0 {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("reading the kernel's answer to the nftables batch: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("reading the kernel's answer to the nftables batch: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != syscall.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(m.Data))
			what, ok := pending[m.Header.Seq]
			delete(pending, m.Header.Seq)
			switch {
			case errno == 0:
			case ok:
				return fmt.Errorf("%s: %w", what, syscall.Errno(errno))
			case m.Header.Seq == begin:
				return fmt.Errorf("nftables batch: %w", syscall.Errno(errno))
			default:
				return syscall.Errno(errno)
			}
		}
	}
	return nil
}

// nftError sorts a netlink failure: no permission, no nf_tables support in
// the kernel, or anything else.
func nftError(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: nftables cannot change this network namespace (%w)", ErrPermission, err)
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOENT),
		errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("%w in this kernel (%w)", ErrNFTablesUnavailable, err)
	}
	return fmt.Errorf("installing the nftables ruleset over netlink: %w", err)
}
