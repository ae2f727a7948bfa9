package datapath

// The BPF objects are compiled from netpol/bpf with the bpf2go pinned in
// go.mod; `make bpf` reruns this, and TestBPFObjectsFresh fails when the
// committed output is stale. Little-endian only (amd64, arm64).
//go:generate go tool bpf2go -cc clang -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type pod_state -type rule_key -type rule -type peer_key -type peer_val -type port_key -type ct_key -type ct4_key -type ct_val -type counter -type settings -type event netpol ../bpf/netpol.c
