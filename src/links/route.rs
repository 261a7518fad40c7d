//! Which interface carries the default route: read from the kernel's route tables in
//! `/proc/net/route` (IPv4) and `/proc/net/ipv6_route` (IPv6), in the process's own
//! network namespace. The parsing is pure; [`default_interface`] reads the files.

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_REJECT`: an unreachable route (the IPv6 table's catch-all on `lo`).
const RTF_REJECT: u32 = 0x0200;

/// The interface of the IPv4 default route with the lowest metric.
pub fn ipv4_default(table: &str) -> Option<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|v| u32::from_str_radix(v, 16).ok());
            let (dest, flags, metric, mask) = (hex(1)?, hex(3)?, f.get(6)?, hex(7)?);
            let metric: u32 = metric.parse().ok()?;
            (dest == 0 && mask == 0 && flags & RTF_UP != 0 && flags & RTF_REJECT == 0)
                .then(|| (metric, f[0].to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface of the IPv6 default route (`::/0`) with the lowest metric.
pub fn ipv6_default(table: &str) -> Option<String> {
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let hex = |i: usize| u32::from_str_radix(f[i], 16).ok();
            let all_zero = f[0].bytes().all(|b| b == b'0');
            let (plen, metric, flags) = (hex(1)?, hex(5)?, hex(8)?);
            (all_zero
                && plen == 0
                && flags & RTF_UP != 0
                && flags & RTF_REJECT == 0
                && f[9] != "lo")
                .then(|| (metric, f[9].to_string()))
        })
        .min()
        .map(|(_, iface)| iface)
}

/// The interface carrying the default route now: IPv4's if there is one, else IPv6's.
pub fn default_interface() -> Option<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    ipv4_default(&v4).or_else(|| {
        let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
        ipv6_default(&v6)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wwan0\t00000000\t0102000A\t0003\t0\t0\t600\t00000000\t0\t0\t0
wlan0\t00000000\t0101000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth9\t00000000\t0101000A\t0002\t0\t0\t0\t00000000\t0\t0\t0
wlan0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    const V6: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     wwan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        // eth9's default is not up; the /24 is not a default.
        assert_eq!(ipv4_default(V4).as_deref(), Some("wlan0"));
        assert_eq!(ipv6_default(V6).as_deref(), Some("wwan0"));
    }

    #[test]
    fn no_default_route_is_none() {
        let header = V4.lines().next().unwrap_or_default();
        assert_eq!(ipv4_default(header), None);
        let only_reject = V6.lines().last().unwrap_or_default();
        assert_eq!(ipv6_default(only_reject), None);
        assert_eq!(ipv4_default("garbage\nmore garbage here"), None);
    }

    /// iproute2 as the oracle: the interface of this namespace's default route.
    #[test]
    fn this_machine_s_default_route_is_the_one_ip_shows() {
        let out = std::process::Command::new("ip")
            .args(["-4", "route", "show", "default"])
            .output()
            .expect("ip (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        let dev = text.lines().next().and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|w| *w == "dev")?;
            f.get(i + 1).map(|d| d.to_string())
        });
        if dev.is_some() {
            assert_eq!(default_interface(), dev, "{text}");
        }
    }
}
