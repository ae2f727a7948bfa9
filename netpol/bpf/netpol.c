//go:build ignore

// berth-netpol datapath: NetworkPolicy enforcement on a pod's host veth.
//
// netpol_egress runs on TCX ingress of the host veth (packets the pod sends:
// pod egress, matched on the destination); netpol_ingress runs on TCX egress
// of the host veth (packets to the pod: pod ingress, matched on the source).
// Everything is keyed by the host veth's ifindex. See netpol/README.md for
// the map layout and the established-flow rule.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// TCX verdicts (newer than the installed uapi headers). NEXT lets programs
// attached after ours see an allowed packet; at the end of the chain it
// passes.
#define TCX_NEXT -1
#define TCX_DROP 2

#define DIR_INGRESS 0
#define DIR_EGRESS 1

#define VERDICT_ALLOW 0
#define VERDICT_DENY 1

// pod_state.flags
#define POD_ISOLATED_INGRESS (1 << 0)
#define POD_ISOLATED_EGRESS (1 << 1)

// rule.flags
#define RULE_ANY_PEER (1 << 0)
#define RULE_ANY_PORT (1 << 1)

// Upper bound of the rule loop per direction (userspace refuses more).
#define MAX_RULES 65536

// Conntrack idle timeouts: an entry idle longer is treated as absent.
#define CT_TIMEOUT_TCP (12ULL * 3600 * 1000000000ULL)
#define CT_TIMEOUT_OTHER (300ULL * 1000000000ULL)
// last_seen is refreshed at most this often, to keep writes off the fast path.
#define CT_REFRESH (1000000000ULL)

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

// ICMPv6 types: errors below 128, echo, and the neighbour discovery and
// multicast listener messages a pod cannot live without.
#define ICMP6_ERROR_MAX 127
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129
#define ICMP6_MLD_QUERY 130
#define ICMP6_MLD_DONE 132
#define ICMP6_ROUTER_SOLICIT 133
#define ICMP6_REDIRECT 137
#define ICMP6_MLD2_REPORT 143

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

// The IPv6 header (linux/ipv6.h needs libc-compat definitions).
struct ip6 {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

// linux/icmp.h drags in libc headers; the echo header is all we read.
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
struct icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

// Per pod (host veth ifindex). ruleset is also the policy generation:
// every Apply writes a new one.
struct pod_state {
	__u32 ruleset;
	__u32 flags;
	__u32 n_rules[2]; // indexed by DIR_*
};

struct rule_key {
	__u32 ruleset;
	__u32 dir;
	__u32 index;
};

struct rule {
	__u32 peer_set;
	__u32 port_set;
	__u32 flags;
	__u32 id;
};

// An address in network byte order, IPv4 as IPv4-mapped IPv6
// (::ffff:a.b.c.d), so one key shape serves both families.
struct addr {
	__u32 a[4];
};

// Peer sets of IPv6 prefixes use the set id with this bit: ::/0 must not
// hold the IPv4-mapped addresses.
#define SET_V6 0x80000000u

// LPM key of the peer sets: prefixlen covers set (32 bits, always
// matched) plus the address prefix (IPv4: 96 + bits of the mapped form).
struct peer_key {
	__u32 prefixlen;
	__u32 set;
	struct addr addr;
};

// member 0 marks an Except: the longest prefix decides.
struct peer_val {
	__u32 id; // rule ID of a merged set's member, 0: the rule's own
	__u32 member;
};

// LPM key of the port sets: set and proto always matched; pad is always 0;
// the port prefix expresses ranges. prefixlen 40 matches every port of
// proto.
struct port_key {
	__u32 prefixlen;
	__u32 set;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

// Conntrack is keyed by the flow with its two endpoints in a canonical
// order (the lower address, then port, first), so a packet and its reply
// find the same entry in one lookup; ct_val.flags says which way the
// opener sent. Entries are scoped to the veth they were seen on, so one
// pod's packets can never create or match another's.
struct ct_key {
	__u32 ifindex;
	struct addr saddr;
	struct addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

// The IPv4 conntrack key: half the size of ct_key, and hashed on every
// packet.
struct ct4_key {
	__u32 ifindex;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

// ct_val.flags: the opener's tuple is the key's reversed.
#define CT_OPENER_SWAPPED 1

struct ct_val {
	__u64 last_seen;
	__u32 generation; // the node's policy epoch when last judged
	__u32 rule_id;
	__u32 dir; // direction the flow was opened in
	__u32 flags;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct settings {
	__u32 log_enabled;
	__u32 log_per_second;
};

struct log_window {
	__u64 start;
	__u64 count;
};

struct event {
	struct addr saddr;
	struct addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 verdict;
	__u8 pad;
	__u32 ifindex;
	__u32 rule_id;
};

// Keeps struct event in BTF for bpf2go's generated Go type.
const struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pod_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rule_key);
	__type(value, struct rule);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peer_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct port_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_sets SEC(".maps");

// Sources always allowed into pods (the node's addresses: kubelet probes).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_ips SEC(".maps");

// One per family; max_entries of each is set from Config.ConntrackSize
// at load.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct4_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack6 SEC(".maps");

// A conntrack key of either family.
union ctk {
	struct ct4_key v4;
	struct ct_key v6;
};

// endpoint_gt orders endpoints (address words, then port) for the
// canonical key. Any total order does; raw network-order values are
// compared, with no byte swapping.
static __always_inline int endpoint_gt(const struct addr *a, __be16 ap, const struct addr *b, __be16 bp)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (a->a[i] != b->a[i])
			return a->a[i] > b->a[i];
	return ap > bp;
}

// ctk_make builds the canonical key of the flow (saddr, sport) ->
// (daddr, dport) on ifindex and returns whether its endpoints were
// swapped.
static __always_inline int ctk_make(union ctk *k, __u32 ifindex, const struct addr *saddr,
				    const struct addr *daddr, __be16 sport, __be16 dport, __u8 proto,
				    int v6)
{
	const struct addr *lo = saddr, *hi = daddr;
	__be16 lp = sport, hp = dport;
	int swap;
	if (v6)
		swap = endpoint_gt(saddr, sport, daddr, dport);
	else
		swap = saddr->a[3] != daddr->a[3] ? saddr->a[3] > daddr->a[3] : sport > dport;
	if (swap) {
		lo = daddr;
		hi = saddr;
		lp = dport;
		hp = sport;
	}
	if (v6)
		k->v6 = (struct ct_key){.ifindex = ifindex, .saddr = *lo, .daddr = *hi,
					.sport = lp, .dport = hp, .proto = proto};
	else
		k->v4 = (struct ct4_key){.ifindex = ifindex, .saddr = lo->a[3], .daddr = hi->a[3],
					 .sport = lp, .dport = hp, .proto = proto};
	return swap;
}

static __always_inline struct ct_val *ctk_get(union ctk *k, int v6)
{
	if (v6)
		return bpf_map_lookup_elem(&conntrack6, &k->v6);
	return bpf_map_lookup_elem(&conntrack, &k->v4);
}

static __always_inline void ctk_put(union ctk *k, int v6, const struct ct_val *v)
{
	if (v6)
		bpf_map_update_elem(&conntrack6, &k->v6, v, BPF_ANY);
	else
		bpf_map_update_elem(&conntrack, &k->v4, v, BPF_ANY);
}

static __always_inline void ctk_del(union ctk *k, int v6)
{
	if (v6)
		bpf_map_delete_elem(&conntrack6, &k->v6);
	else
		bpf_map_delete_elem(&conntrack, &k->v4);
}

// The flow cache: per CPU, FLOW_SLOTS direct-mapped slots remembering
// that an IPv4 flow's conntrack entry was live and judged in an epoch, at
// a time. A small array (not vmalloc'd, unlike the conntrack map) read
// instead of the conntrack hash for at most CT_REFRESH after each visit
// to conntrack; each CPU owns its slots (cpu * FLOW_SLOTS + hash), so no
// two programs write one slot at once. max_entries is set at load to
// possible CPUs * FLOW_SLOTS. Not pinned: a cache, rebuilt by each load.
#define FLOW_SLOTS 256

struct flow_slot {
	struct ct4_key key;
	__u32 epoch;
	__u64 seen;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOW_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_slot);
} flow_cache SEC(".maps");

// Index dir*2 + verdict.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

// The node's policy epoch: userspace raises it after any pod's ruleset
// changes. A conntrack entry judged in the current epoch passes without
// the pod's state being read; any other is judged again once.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} epoch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct log_window);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} log_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} verdicts SEC(".maps");

struct flow {
	struct addr saddr;
	struct addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 has_ports; // TCP, UDP, SCTP: rules with Ports can match
	__u8 opens; // may create a conntrack entry: not a mid-stream TCP segment
	__u8 icmp_error; // *inner holds the flow the ICMP error is about
	__u8 v6;
	__u8 always; // neighbour discovery and MLD: pass, untracked
};

struct eval_ctx {
	const struct flow *f;
	__u32 ruleset;
	__u32 dir;
	__u32 allowed;
	__u32 rule_id;
};

static long eval_rule(__u64 index, void *data)
{
	struct eval_ctx *c = data;
	struct rule_key rk = {.ruleset = c->ruleset, .dir = c->dir, .index = (__u32)index};
	struct rule *r = bpf_map_lookup_elem(&rules, &rk);
	if (!r)
		return 1; // a torn ruleset cannot happen (see Apply); fail closed

	__u32 id = r->id;
	if (!(r->flags & RULE_ANY_PEER)) {
		struct peer_key pk = {
			.prefixlen = 160,
			.set = c->f->v6 ? r->peer_set | SET_V6 : r->peer_set,
			.addr = c->dir == DIR_INGRESS ? c->f->saddr : c->f->daddr,
		};
		struct peer_val *pv = bpf_map_lookup_elem(&peer_sets, &pk);
		if (!pv || !pv->member)
			return 0;
		if (pv->id)
			id = pv->id;
	}
	if (!(r->flags & RULE_ANY_PORT)) {
		if (!c->f->has_ports)
			return 0;
		struct port_key k = {
			.prefixlen = 64,
			.set = r->port_set,
			.proto = c->f->proto,
			.port = c->f->dport,
		};
		if (!bpf_map_lookup_elem(&port_sets, &k))
			return 0;
	}
	c->allowed = 1;
	c->rule_id = id;
	return 1;
}

// evaluate decides a flow travelling in dir against the pod's policy. It
// and the other paths a tracked packet does not take are BPF-to-BPF calls,
// not inlined: the per-packet code stays small in the instruction cache.
static __noinline int evaluate(const struct pod_state *ps, const struct flow *f, __u32 dir,
				    __u32 *rule_id)
{
	*rule_id = 0;
	if (dir == DIR_INGRESS && bpf_map_lookup_elem(&node_ips, &f->saddr))
		return 1;
	__u32 isolated = dir == DIR_INGRESS ? POD_ISOLATED_INGRESS : POD_ISOLATED_EGRESS;
	if (!(ps->flags & isolated))
		return 1;
	__u32 n = ps->n_rules[dir & 1];
	if (n == 0)
		return 0;
	if (n > MAX_RULES)
		n = MAX_RULES;
	struct eval_ctx c = {.f = f, .ruleset = ps->ruleset, .dir = dir};
	bpf_loop(n, eval_rule, &c, 0);
	*rule_id = c.rule_id;
	return c.allowed;
}

static __always_inline void count(__u32 dir, __u32 verdict, __u64 len)
{
	__u32 idx = (dir & 1) * 2 + (verdict & 1);
	struct counter *c = bpf_map_lookup_elem(&counters, &idx);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __noinline void log_verdict(const struct flow *f, __u32 dir, __u32 verdict,
					__u32 ifindex, __u32 rule_id)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&config, &zero);
	if (!s || !s->log_enabled)
		return;
	struct log_window *w = bpf_map_lookup_elem(&log_state, &zero);
	if (!w)
		return;
	__u64 now = bpf_ktime_get_ns();
	// A racy window reset at most lets a few extra events through.
	if (now - w->start >= 1000000000ULL) {
		w->start = now;
		w->count = 0;
	}
	if (__sync_fetch_and_add(&w->count, 1) >= s->log_per_second)
		return;
	struct event *e = bpf_ringbuf_reserve(&verdicts, sizeof(*e), 0);
	if (!e)
		return;
	e->saddr = f->saddr;
	e->daddr = f->daddr;
	e->sport = f->sport;
	e->dport = f->dport;
	e->proto = f->proto;
	e->dir = dir;
	e->verdict = verdict;
	e->pad = 0;
	e->ifindex = ifindex;
	e->rule_id = rule_id;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void map4(struct addr *a, __be32 v4)
{
	a->a[0] = 0;
	a->a[1] = 0;
	a->a[2] = bpf_htonl(0xffff);
	a->a[3] = v4;
}

// parse_icmp_error reads the header an ICMP error quotes (the packet that
// caused it, as that packet's sender sent it) into a conntrack key.
static __noinline int parse_icmp_error(struct __sk_buff *skb, __u32 l4off, struct ct_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	struct iphdr in;
	__u32 off = l4off + 8;
	if (bpf_skb_load_bytes(skb, off, &in, sizeof(in)) < 0 || in.ihl < 5)
		return -1;
	__be16 ports[2] = {};
	if (in.protocol == IPPROTO_TCP || in.protocol == IPPROTO_UDP || in.protocol == IPPROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, off + in.ihl * 4, ports, sizeof(ports)) < 0)
			return -1;
	} else if (in.protocol == IPPROTO_ICMP) {
		struct icmp_echo ie;
		if (bpf_skb_load_bytes(skb, off + in.ihl * 4, &ie, sizeof(ie)) < 0)
			return -1;
		if (ie.type != ICMP_ECHO && ie.type != ICMP_ECHOREPLY)
			return -1;
		ports[0] = ie.id;
		ports[1] = ie.id;
	} else {
		return -1;
	}
	map4(&k->saddr, in.saddr);
	map4(&k->daddr, in.daddr);
	k->sport = ports[0];
	k->dport = ports[1];
	k->proto = in.protocol;
	return 0;
}

static __always_inline int parse(struct __sk_buff *skb, struct flow *f, struct ct_key *inner)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end) {
		// Headers not in the linear area: pull them in and re-read.
		if (bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(struct iphdr) + 8) < 0)
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > data_end)
			return -1;
	}
	if (ip->ihl < 5)
		return -1;
	map4(&f->saddr, ip->saddr);
	map4(&f->daddr, ip->daddr);
	f->proto = ip->protocol;
	f->sport = 0;
	f->dport = 0;
	f->has_ports = 0;
	f->opens = 1;
	// A non-first fragment has no L4 header. It passes on the addresses
	// alone (see README): the receiver cannot reassemble the datagram
	// without the first fragment, which was judged with its ports.
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 1;

	switch (f->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
	case IPPROTO_ICMP:
		break;
	default:
		return 0; // no L4 header we read: judged on addresses alone
	}

	__u32 l4off = sizeof(struct ethhdr) + ip->ihl * 4;
	__u8 *l4 = data + l4off;
	if ((void *)(l4 + 8) > data_end) {
		if (bpf_skb_pull_data(skb, l4off + 8) < 0)
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		l4 = data + l4off;
		if ((void *)(l4 + 8) > data_end)
			return -1;
	}
	switch (f->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		// All three start with the source and destination port.
		f->sport = *(__be16 *)l4;
		f->dport = *(__be16 *)(l4 + 2);
		f->has_ports = 1;
		break;
	case IPPROTO_ICMP: {
		struct icmp_echo *ic = (void *)l4;
		// Echo request and reply share the identifier: it stands in for
		// both ports so the reply finds the request's entry.
		if (ic->type == ICMP_ECHO || ic->type == ICMP_ECHOREPLY) {
			f->sport = ic->id;
			f->dport = ic->id;
		} else {
			f->sport = bpf_htons(((__u16)ic->type << 8) | ic->code);
			if (ic->type == ICMP_DEST_UNREACH || ic->type == ICMP_TIME_EXCEEDED ||
			    ic->type == ICMP_PARAMETERPROB)
				f->icmp_error = parse_icmp_error(skb, l4off, inner) == 0;
		}
		break;
	}
	}
	if (f->proto == IPPROTO_TCP) {
		// Only a SYN opens a TCP flow. A mid-stream segment passes when
		// policy allows it but creates no entry: otherwise a side whose
		// direction is open could revive, as "replies", a connection
		// the other side's new policy has cut.
		__u8 *flags = data + l4off + 13;
		if ((void *)(flags + 1) > data_end) {
			if (bpf_skb_pull_data(skb, l4off + 14) < 0)
				return -1;
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			flags = data + l4off + 13;
			if ((void *)(flags + 1) > data_end)
				return -1;
		}
		if ((*flags & 0x12) != 0x02) // SYN without ACK
			f->opens = 0;
	}
	return 0;
}

// parse_icmp6_error is parse_icmp_error for ICMPv6 (the quoted header's
// extension headers are not walked).
static __noinline int parse_icmp6_error(struct __sk_buff *skb, __u32 l4off, struct ct_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	struct ip6 in;
	__u32 off = l4off + 8;
	if (bpf_skb_load_bytes(skb, off, &in, sizeof(in)) < 0)
		return -1;
	off += sizeof(in);
	__be16 ports[2] = {};
	if (in.nexthdr == IPPROTO_TCP || in.nexthdr == IPPROTO_UDP || in.nexthdr == IPPROTO_SCTP) {
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return -1;
	} else if (in.nexthdr == IPPROTO_ICMPV6) {
		struct icmp_echo ie;
		if (bpf_skb_load_bytes(skb, off, &ie, sizeof(ie)) < 0)
			return -1;
		if (ie.type != ICMP6_ECHO_REQUEST && ie.type != ICMP6_ECHO_REPLY)
			return -1;
		ports[0] = ie.id;
		ports[1] = ie.id;
	} else {
		return -1;
	}
	__builtin_memcpy(&k->saddr, in.saddr, sizeof(k->saddr));
	__builtin_memcpy(&k->daddr, in.daddr, sizeof(k->daddr));
	k->sport = ports[0];
	k->dport = ports[1];
	k->proto = in.nexthdr;
	return 0;
}

// parse6 is parse for IPv6: it walks up to six extension headers to the
// L4 header; like IPv4, a non-first fragment returns 1.
static __noinline int parse6(struct __sk_buff *skb, struct flow *f, struct ct_key *inner)
{
	struct ip6 ip;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip)) < 0)
		return -1;
	f->v6 = 1;
	__builtin_memcpy(&f->saddr, ip.saddr, sizeof(f->saddr));
	__builtin_memcpy(&f->daddr, ip.daddr, sizeof(f->daddr));
	f->opens = 1;
	__u8 nh = ip.nexthdr;
	__u32 off = sizeof(struct ethhdr) + sizeof(ip);
#pragma unroll
	for (int i = 0; i < 6; i++) {
		if (nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST) {
			__u8 h[2];
			if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
				return -1;
			nh = h[0];
			off += ((__u32)h[1] + 1) * 8;
		} else if (nh == NEXTHDR_FRAGMENT) {
			struct {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 id;
			} fh;
			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)) < 0)
				return -1;
			f->proto = fh.nexthdr;
			if (fh.frag_off & bpf_htons(0xfff8))
				return 1;
			nh = fh.nexthdr;
			off += sizeof(fh);
		} else {
			break;
		}
	}
	f->proto = nh;
	switch (nh) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return -1;
		f->sport = ports[0];
		f->dport = ports[1];
		f->has_ports = 1;
		if (nh == IPPROTO_TCP) {
			__u8 flags;
			if (bpf_skb_load_bytes(skb, off + 13, &flags, 1) < 0)
				return -1;
			if ((flags & 0x12) != 0x02) // only a SYN opens (see parse)
				f->opens = 0;
		}
		break;
	}
	case IPPROTO_ICMPV6: {
		struct icmp_echo ic;
		if (bpf_skb_load_bytes(skb, off, &ic, sizeof(ic)) < 0)
			return -1;
		if (ic.type == ICMP6_ECHO_REQUEST || ic.type == ICMP6_ECHO_REPLY) {
			f->sport = ic.id;
			f->dport = ic.id;
			break;
		}
		f->sport = bpf_htons(((__u16)ic.type << 8) | ic.code);
		if (ic.type <= ICMP6_ERROR_MAX)
			f->icmp_error = parse_icmp6_error(skb, off, inner) == 0;
		else if ((ic.type >= ICMP6_MLD_QUERY && ic.type <= ICMP6_REDIRECT) || ic.type == ICMP6_MLD2_REPORT)
			f->always = 1;
		break;
	}
	}
	return 0;
}

static __always_inline __u64 ct_timeout(__u8 proto)
{
	return proto == IPPROTO_TCP ? CT_TIMEOUT_TCP : CT_TIMEOUT_OTHER;
}

// judge is the whole decision for any packet; established IPv4 TCP and UDP
// rarely get here (see handle). A BPF-to-BPF call: its code stays out of
// the fast path's cache lines. untracked: fast4 has just found no
// conntrack entry for this packet's flow, so judge does not look again.
static __noinline int judge(struct __sk_buff *skb, __u32 dir, int untracked)
{
	struct flow f = {};
	struct ct_key inner; // written only for ICMP errors, read only then
	int frag;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		frag = parse(skb, &f, &inner);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		frag = parse6(skb, &f, &inner);
	else
		return TCX_NEXT; // ARP and the rest: not IP, not policy's business

	__u32 ifindex = skb->ifindex;
	__u32 verdict = VERDICT_DENY, rule_id = 0;
	if (frag < 0)
		goto out; // a truncated header: fail closed
	// Read before the pod's state: an entry stamped with this epoch was
	// judged by a state at least as new as the epoch (userspace swaps
	// states, then raises the epoch).
	__u32 zero = 0;
	__u32 *ep = bpf_map_lookup_elem(&epoch, &zero);
	__u32 cur = ep ? *ep : 0;
	__u64 now = bpf_ktime_get_coarse_ns();
	union ctk key;
	int swapped = 0;
	struct ct_val *ct = NULL;
	if (frag == 0 && !f.always && !f.icmp_error) {
		// The fast path: a flow judged in this epoch, either way.
		swapped = ctk_make(&key, ifindex, &f.saddr, &f.daddr, f.sport, f.dport, f.proto, f.v6);
		ct = untracked ? NULL : ctk_get(&key, f.v6);
		if (ct && now - ct->last_seen < ct_timeout(f.proto)) {
			if (ct->generation == cur) {
				if (now - ct->last_seen > CT_REFRESH)
					ct->last_seen = now;
				verdict = VERDICT_ALLOW;
				goto out_quiet;
			}
		} else {
			ct = NULL;
		}
	}

	struct pod_state *ps = bpf_map_lookup_elem(&pod_states, &ifindex);
	if (!ps)
		goto out; // attached without state: fail closed
	if (frag == 1 || f.always) {
		verdict = VERDICT_ALLOW;
		goto out_quiet;
	}
	if (f.icmp_error) {
		// An error about a tracked flow (needs-frag for path MTU
		// discovery, unreachable, TTL exceeded) is part of that flow.
		union ctk ik;
		ctk_make(&ik, ifindex, &inner.saddr, &inner.daddr, inner.sport, inner.dport, inner.proto, f.v6);
		if (ctk_get(&ik, f.v6)) {
			verdict = VERDICT_ALLOW;
			goto out_quiet;
		}
		swapped = ctk_make(&key, ifindex, &f.saddr, &f.daddr, f.sport, f.dport, f.proto, f.v6);
	}

	int open = !(ps->flags & (dir == DIR_INGRESS ? POD_ISOLATED_INGRESS : POD_ISOLATED_EGRESS));
	int tracked = 0;
	if (ct && swapped == (ct->flags & CT_OPENER_SWAPPED)) {
		// The policy changed since this flow was judged: judge it once
		// more (same direction, same tuple as a new packet would be).
		tracked = 1;
	} else if (ct && open) {
		// A reply in a direction the policy leaves open: the opener's
		// side judges the flow again.
		verdict = VERDICT_ALLOW;
		goto out_quiet;
	} else if (ct) {
		// A reply after a policy change: re-judge the flow as its opener
		// sent it.
		struct flow orig = {
			.saddr = f.daddr,
			.daddr = f.saddr,
			.sport = f.dport,
			.dport = f.sport,
			.proto = f.proto,
			.has_ports = f.has_ports,
			.v6 = f.v6,
		};
		__u32 odir = ct->dir & 1;
		__u32 oid;
		if (evaluate(ps, &orig, odir, &oid)) {
			ct->generation = cur;
			ct->rule_id = oid;
			ct->last_seen = now;
			verdict = VERDICT_ALLOW;
			rule_id = oid;
			log_verdict(&orig, odir, verdict, ifindex, oid);
			goto out_quiet;
		}
		ctk_del(&key, f.v6);
		// Cut; the packet itself may still be allowed as new.
	} else if (open) {
		// A direction the pod's policy leaves open allows every packet.
		// A flow opened here is still tracked, for its replies in the
		// other, maybe isolated, direction.
		verdict = VERDICT_ALLOW;
		if (f.opens) {
			struct ct_val nv = {.last_seen = now, .generation = cur, .dir = dir,
					    .flags = swapped ? CT_OPENER_SWAPPED : 0};
			ctk_put(&key, f.v6, &nv);
			goto out; // a new connection is worth a verdict event
		}
		goto out_quiet;
	}

	if (evaluate(ps, &f, dir, &rule_id)) {
		verdict = VERDICT_ALLOW;
		if (tracked) {
			ct->generation = cur;
			ct->rule_id = rule_id;
			ct->last_seen = now;
		} else if (f.opens) {
			struct ct_val nv = {.last_seen = now, .generation = cur, .rule_id = rule_id, .dir = dir,
					    .flags = swapped ? CT_OPENER_SWAPPED : 0};
			ctk_put(&key, f.v6, &nv);
		}
	} else if (tracked) {
		ctk_del(&key, f.v6);
	}
	log_verdict(&f, dir, verdict, ifindex, rule_id);
	goto out_quiet;

out:
	log_verdict(&f, dir, verdict, ifindex, rule_id);
out_quiet:
	count(dir, verdict, skb->len);
	return verdict == VERDICT_ALLOW ? TCX_NEXT : TCX_DROP;
}

// fast4's results.
#define FAST_JUDGE 0 // judge decides (anything else, or anything unusual)
#define FAST_PASSED 1
#define FAST_UNTRACKED 2 // judge decides; conntrack has no entry for the flow

// fast4 passes a packet of an IPv4 TCP or UDP flow judged in the current
// epoch, with the fewest instructions and memory lines: real traffic
// meets the program with cold caches, so each line it touches costs more
// than its instructions.
static __always_inline int fast4(struct __sk_buff *skb, __u32 dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__be16 *ports = (void *)(ip + 1);
	if ((void *)(ports + 2) > data_end)
		return FAST_JUDGE;
	// No options, no fragment (first or later), and a protocol with ports.
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) ||
	    (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return FAST_JUDGE;
	__be32 sa = ip->saddr, da = ip->daddr;
	__be16 sp = ports[0], dp = ports[1];
	int swap = sa != da ? sa > da : sp > dp; // the order of ctk_make
	struct ct4_key k = {
		.ifindex = skb->ifindex,
		.saddr = swap ? da : sa,
		.daddr = swap ? sa : da,
		.sport = swap ? dp : sp,
		.dport = swap ? sp : dp,
		.proto = ip->protocol,
	};
	__u32 zero = 0;
	__u32 *ep = bpf_map_lookup_elem(&epoch, &zero);
	if (!ep)
		return FAST_JUDGE;
	__u32 cur = *ep;
	__u64 now = bpf_ktime_get_coarse_ns();

	// A slot is trusted only for its own epoch and for CT_REFRESH after
	// conntrack was seen live: nothing deletes a live entry of the
	// current epoch except LRU eviction, and a flow the current policy
	// allowed may pass a moment longer without its entry.
	__u32 h = (k.ifindex ^ k.saddr ^ k.daddr ^ ((__u32)k.sport << 16 | k.dport) ^ k.proto) * 0x9e3779b1u;
	__u32 idx = bpf_get_smp_processor_id() * FLOW_SLOTS + (h >> 24);
	struct flow_slot *slot = bpf_map_lookup_elem(&flow_cache, &idx);
	if (slot && slot->epoch == cur && now - slot->seen < CT_REFRESH &&
	    slot->key.ifindex == k.ifindex && slot->key.saddr == k.saddr && slot->key.daddr == k.daddr &&
	    slot->key.sport == k.sport && slot->key.dport == k.dport && slot->key.proto == k.proto) {
		count(dir, VERDICT_ALLOW, skb->len);
		return FAST_PASSED;
	}

	struct ct_val *ct = bpf_map_lookup_elem(&conntrack, &k);
	if (!ct)
		return FAST_UNTRACKED;
	if (ct->generation != cur)
		return FAST_JUDGE;
	__u64 idle = now - ct->last_seen;
	if (idle >= ct_timeout(k.proto))
		return FAST_JUDGE;
	if (idle > CT_REFRESH)
		ct->last_seen = now;
	if (slot) {
		slot->key = k;
		slot->epoch = cur;
		slot->seen = now;
	}
	count(dir, VERDICT_ALLOW, skb->len);
	return FAST_PASSED;
}

static __always_inline int handle(struct __sk_buff *skb, __u32 dir)
{
	int fast = skb->protocol == bpf_htons(ETH_P_IP) ? fast4(skb, dir) : FAST_JUDGE;
	if (fast == FAST_PASSED)
		return TCX_NEXT;
	return judge(skb, dir, fast == FAST_UNTRACKED);
}

SEC("tcx/egress")
int netpol_ingress(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

SEC("tcx/ingress")
int netpol_egress(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

char __license[] SEC("license") = "GPL";
