package network

import (
	"net/netip"
	"testing"
)

func TestSandboxResolvConf(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "nameserver 10.255.255.53\n", "nameserver 10.255.255.53\n"},
		{"systemd-resolved stub", "# comment\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example\n",
			"nameserver 1.1.1.1\nnameserver 8.8.8.8\noptions edns0 trust-ad\nsearch corp.example\n"},
		{"mixed keeps usable", "nameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver ::1\n", "nameserver 192.0.2.53\n"},
		{"ipv6 and link-local dropped", "nameserver fd00::53\nnameserver 169.254.169.253\n", "nameserver 1.1.1.1\nnameserver 8.8.8.8\n"},
		{"empty", "", "nameserver 1.1.1.1\nnameserver 8.8.8.8\n"},
		{"garbage and domain", "nameserver notanip\ndomain example.org\nsortlist 1.2.3.4\n",
			"nameserver 1.1.1.1\nnameserver 8.8.8.8\ndomain example.org\n"},
		{"tabs", "nameserver\t10.0.0.2 \n", "nameserver 10.0.0.2\n"},
	}
	for _, c := range cases {
		if got := string(sandboxResolvConf([]byte(c.in))); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestPool(t *testing.T) {
	p := newPool(netip.MustParsePrefix("10.9.0.0/30"))
	a, err := p.allocate()
	if err != nil || a.String() != "10.9.0.2" {
		t.Fatalf("/30: %s %v, want 10.9.0.2", a, err)
	}
	if _, err := p.allocate(); err != ErrExhausted {
		t.Fatalf("/30 second allocation: %v", err)
	}
	p.release(a)
	if b, err := p.allocate(); err != nil || b != a {
		t.Fatalf("after release: %s %v", b, err)
	}

	p = newPool(netip.MustParsePrefix("10.9.0.0/24"))
	if p.reserve(netip.MustParseAddr("10.9.0.1")) || p.reserve(netip.MustParseAddr("10.9.0.255")) ||
		p.reserve(netip.MustParseAddr("10.9.1.5")) || p.reserve(netip.MustParseAddr("10.9.0.0")) {
		t.Fatal("reserved gateway, broadcast, network or foreign address")
	}
	if !p.reserve(netip.MustParseAddr("10.9.0.3")) || p.reserve(netip.MustParseAddr("10.9.0.3")) {
		t.Fatal("reserve of a free address failed, or reserved twice")
	}
	got := map[string]bool{}
	for range 252 {
		a, err := p.allocate()
		if err != nil {
			t.Fatal(err)
		}
		if got[a.String()] || a.String() == "10.9.0.3" {
			t.Fatalf("%s handed out twice", a)
		}
		got[a.String()] = true
	}
	if _, err := p.allocate(); err != ErrExhausted {
		t.Fatalf("full /24: %v", err)
	}
	// Next-fit: a freed address is not the next one handed out while
	// others are free.
	p.release(netip.MustParseAddr("10.9.0.10"))
	p.release(netip.MustParseAddr("10.9.0.200"))
	if a, _ := p.allocate(); a.String() != "10.9.0.10" {
		t.Fatalf("after wrap-around got %s", a)
	}
	p.release(netip.MustParseAddr("10.9.0.5"))
	if a, _ := p.allocate(); a.String() != "10.9.0.200" {
		t.Fatalf("next-fit got %s, want 10.9.0.200", a)
	}
}

func TestNames(t *testing.T) {
	a, b := vethName("paddock0", "i123"), vethName("paddock0", "i124")
	if len(a) != 15 || a == b || a != vethName("paddock0", "i123") || a == vethName("pdtest0", "i123") {
		t.Fatalf("veth names %q %q", a, b)
	}
	for _, ok := range []string{"i0123456789abcdefghij", "a", "A_b-c"} {
		if err := validID(ok); err != nil {
			t.Fatalf("validID(%q): %v", ok, err)
		}
	}
	if mac := stableMAC("paddock0"); mac[0]&1 != 0 || mac[0]&2 == 0 || mac.String() != stableMAC("paddock0").String() {
		t.Fatalf("bridge MAC %s", mac)
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Bridge != "paddock0" || c.Table != "paddock" || c.Subnet.String() != "10.231.0.0/16" ||
		c.NetnsDir != "/run/paddock/netns" || c.StateDir != "/var/lib/paddock/network" ||
		len(c.DenyEgress) != 1 || c.DenyEgress[0].String() != "169.254.0.0/16" || c.ResolvConf != "/etc/resolv.conf" {
		t.Fatalf("defaults: %+v", c)
	}
	c = Config{Bridge: "pdkt12", Subnet: netip.MustParsePrefix("10.239.3.4/16")}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Table != "paddock_pdkt12" || c.Subnet.String() != "10.239.0.0/16" {
		t.Fatalf("table %q subnet %s: want a per-bridge table and a masked subnet", c.Table, c.Subnet)
	}
	deny := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
	c = Config{DenyEgress: deny}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if deny[0].String() != "10.1.2.3/8" || c.DenyEgress[0].String() != "10.0.0.0/8" {
		t.Fatalf("DenyEgress: caller's %v, config's %v", deny, c.DenyEgress)
	}
	for _, bad := range []Config{
		{Bridge: "way-too-long-name0"}, {Bridge: "a/b"}, {Subnet: netip.MustParsePrefix("10.0.0.0/31")},
		{NetnsDir: "rel"}, {Table: "a b"}, {MTU: -1}, {DenyEgress: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
	} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("config %+v accepted", bad)
		}
	}
}
