//! Kubernetes resource quantities (`500m`, `2`, `256Mi`, `1.5G`, `1e3`), read
//! once here so that validation at deploy and every executor agree on what
//! `resources: {cpu, memory}` means.
//!
//! The grammar is Kubernetes' own: a decimal number (optional sign, optional
//! fraction, optional exponent `e`/`E`), then at most one suffix: binary
//! `Ki Mi Gi Ti Pi Ei`, or decimal `n u m k M G T P E`.

/// CPU in thousandths of a core (`500m` → 500, `2` → 2000), rounded up as
/// Kubernetes does.
pub fn cpu_millis(text: &str) -> Result<u64, String> {
    let value = parse(text)?;
    let millis = (value * 1000.0).ceil();
    if millis < 1.0 {
        return Err(format!(
            "`{text}` is less than the smallest CPU amount, 1m (a thousandth of a core)"
        ));
    }
    to_u64(millis, text)
}

/// Memory in bytes (`256Mi` → 268435456), rounded up.
pub fn memory_bytes(text: &str) -> Result<u64, String> {
    let value = parse(text)?;
    let bytes = value.ceil();
    if bytes < 1.0 {
        return Err(format!("`{text}` is less than one byte"));
    }
    to_u64(bytes, text)
}

fn to_u64(value: f64, text: &str) -> Result<u64, String> {
    // 2^63 keeps every later conversion to i64 (Docker's API) exact.
    if value >= 9.223_372_036_854_776e18 {
        return Err(format!("`{text}` is too large"));
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked to be a positive whole number below 2^63"
    )]
    Ok(value as u64)
}

/// The value of a quantity as a number of base units.
fn parse(text: &str) -> Result<f64, String> {
    let usage = || {
        format!(
            "`{text}` is not a quantity; write a number with an optional suffix, such as \
             \"500m\" or \"2\" for CPU and \"256Mi\" or \"1G\" for memory"
        )
    };
    let s = text.trim();
    if s.is_empty() || s.len() > 64 {
        return Err(usage());
    }
    let (number, multiplier) = split_suffix(s).ok_or_else(usage)?;
    let valid_number = {
        let mut chars = number.chars().peekable();
        if matches!(chars.peek(), Some('+' | '-')) {
            chars.next();
        }
        let mut digits = 0;
        let mut dot = false;
        let mut exponent = false;
        let mut exponent_digits = 0;
        let mut ok = true;
        while let Some(c) = chars.next() {
            match c {
                '0'..='9' if exponent => exponent_digits += 1,
                '0'..='9' => digits += 1,
                '.' if !dot && !exponent => dot = true,
                'e' | 'E' if !exponent && digits > 0 => {
                    exponent = true;
                    if matches!(chars.peek(), Some('+' | '-')) {
                        chars.next();
                    }
                }
                _ => ok = false,
            }
        }
        ok && digits > 0 && (!exponent || exponent_digits > 0)
    };
    if !valid_number {
        return Err(usage());
    }
    let value: f64 = number.parse().map_err(|_| usage())?;
    if value.is_sign_negative() {
        return Err(format!(
            "`{text}` is negative; a resource amount must be positive"
        ));
    }
    let scaled = value * multiplier;
    if !scaled.is_finite() {
        return Err(format!("`{text}` is too large"));
    }
    Ok(scaled)
}

/// Splits `256Mi` into `("256", 2^20)`. `None` for an unknown suffix.
fn split_suffix(s: &str) -> Option<(&str, f64)> {
    const BINARY: &[(&str, i32)] = &[
        ("Ki", 10),
        ("Mi", 20),
        ("Gi", 30),
        ("Ti", 40),
        ("Pi", 50),
        ("Ei", 60),
    ];
    const DECIMAL: &[(&str, i32)] = &[
        ("n", -9),
        ("u", -6),
        ("m", -3),
        ("k", 3),
        ("M", 6),
        ("G", 9),
        ("T", 12),
        ("P", 15),
        ("E", 18),
    ];
    for (suffix, power) in BINARY {
        if let Some(number) = s.strip_suffix(suffix) {
            return Some((number, 2f64.powi(*power)));
        }
    }
    // `E` is both a suffix (exa) and an exponent marker: `1E3` is 1000 and
    // `1E` is 10^18. An `E` followed by digits is an exponent.
    let last = s.chars().last()?;
    if last.is_ascii_digit() || last == '.' {
        return Some((s, 1.0));
    }
    for (suffix, power) in DECIMAL {
        if let Some(number) = s.strip_suffix(suffix) {
            return Some((number, 10f64.powi(*power)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("1e1"), Ok(10_000));
        assert_eq!(
            cpu_millis("0.0001"),
            Ok(1),
            "rounded up, as Kubernetes does"
        );
        assert!(cpu_millis("0").is_err());
        assert!(cpu_millis("-1").unwrap_err().contains("negative"));
        assert!(cpu_millis("half").unwrap_err().contains("not a quantity"));
        assert!(cpu_millis("1 core").is_err());
        assert!(cpu_millis("").is_err());
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(memory_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(memory_bytes("128974848"), Ok(128_974_848));
        assert_eq!(memory_bytes("129e6"), Ok(129_000_000));
        assert_eq!(memory_bytes("123Mi"), Ok(123 << 20));
        assert_eq!(memory_bytes("1.5Ki"), Ok(1536));
        assert_eq!(memory_bytes("1k"), Ok(1000));
        assert_eq!(memory_bytes("2E"), Ok(2_000_000_000_000_000_000));
        assert!(memory_bytes("9Ei").unwrap_err().contains("too large"));
        assert!(memory_bytes("256MB").is_err());
        assert!(memory_bytes("Mi").is_err());
        assert!(memory_bytes("1e").is_err());
        assert!(memory_bytes(".").is_err());
    }
}
