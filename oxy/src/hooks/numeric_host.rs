//! Host names that browsers read as IPv4 addresses (the WHATWG URL Standard's IPv4
//! parser): `127.1`, `0x7f.1`, `0177.0.0.1` and `2130706433` are all 127.0.0.1.

use std::net::Ipv4Addr;

/// A host that ends in a number but is no IPv4 address in any form (`1.2.3.4.5`,
/// `256.1.1.1`, `08.1`): browsers refuse it rather than ask DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a numeric host that is not an IPv4 address")]
pub struct BadNumericHost;

/// How a browser reads `host`: `None` for a name (its last label is not a number),
/// `Some(Ok(ip))` for an IPv4 address in any of its forms, `Some(Err(_))` for a host
/// that ends in a number yet is no address.
pub fn parse_numeric_ipv4(host: &str) -> Option<Result<Ipv4Addr, BadNumericHost>> {
    if let Some(ip) = parse_dotted_decimal(host) {
        return Some(Ok(ip));
    }
    let host = match host.strip_suffix('.') {
        Some(rest) if !rest.is_empty() => rest,
        _ => host,
    };
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    let ends_in_number = match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    };
    ends_in_number.then(|| parse_parts(host).ok_or(BadNumericHost))
}

/// `host` as an IPv4 address when it is written in the dotted form (four decimal
/// numbers up to 255, without leading zeros), in one pass: the form almost every
/// numeric host has, read without the general parse.
pub(crate) fn parse_dotted_decimal(host: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut index, mut value, mut digits) = (0, 0u16, 0);
    for byte in host.bytes() {
        match byte {
            b'0'..=b'9' if !(digits == 1 && value == 0) => {
                value = value * 10 + u16::from(byte - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && index < 3 => {
                octets[index] = u8::try_from(value).ok()?;
                (index, value, digits) = (index + 1, 0, 0);
            }
            _ => return None,
        }
    }
    if index != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// All of `host`'s dot-separated parts as one address: up to four numbers, the last
/// filling the bytes the others leave.
fn parse_parts(host: &str) -> Option<Ipv4Addr> {
    let mut numbers = [0u32; 4];
    let mut count = 0;
    for part in host.split('.') {
        *numbers.get_mut(count)? = parse_part(part)?;
        count += 1;
    }
    let (last, leading) = numbers[..count].split_last()?;
    if leading.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - leading.len() as u32);
    if last_bits < 32 && *last >> last_bits != 0 {
        return None;
    }
    let address = leading
        .iter()
        .enumerate()
        .fold(*last, |ip, (i, &n)| ip | n << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(address))
}

/// One part: decimal, octal with a leading `0`, or hexadecimal after `0x` (which may be
/// empty, meaning 0).
fn parse_part(part: &str) -> Option<u32> {
    let (digits, radix) = match part.get(..2) {
        Some("0x" | "0X") => (&part[2..], 16),
        _ if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
        _ if part.is_empty() => return None,
        _ => (part, 10),
    };
    if digits.is_empty() {
        return (radix == 16).then_some(0);
    }
    if !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_ipv4_forms() {
        let loopback = Some(Ok(Ipv4Addr::LOCALHOST));
        for host in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "0X7F.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "0x7f000001",
            "017700000001",
            "127.0.0.1.",
        ] {
            assert_eq!(parse_numeric_ipv4(host), loopback, "{host}");
        }
        assert_eq!(parse_numeric_ipv4("0x"), Some(Ok(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(
            parse_numeric_ipv4("192.168.257"),
            Some(Ok(Ipv4Addr::new(192, 168, 1, 1)))
        );
        for host in [
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "08.1",
            "4294967296",
            "0x100000000",
            "a.1",
            "1..1",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_numeric_ipv4(host),
                Some(Err(BadNumericHost)),
                "{host}"
            );
        }
        for name in [
            "example.com",
            "1.example",
            "x1",
            "0xg",
            "1a",
            "localhost",
            "",
        ] {
            assert_eq!(parse_numeric_ipv4(name), None, "{name}");
        }
    }

    #[test]
    fn dotted_decimal_only_in_its_strict_form() {
        assert_eq!(
            parse_dotted_decimal("192.0.2.255"),
            Some(Ipv4Addr::new(192, 0, 2, 255))
        );
        assert_eq!(parse_dotted_decimal("0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        for host in [
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.256",
            "1..3.4",
            ".1.2.3",
            "1.2.3.4 ",
            "+1.2.3.4",
            "0x7f.0.0.1",
            "",
        ] {
            assert_eq!(parse_dotted_decimal(host), None, "{host}");
        }
    }
}
