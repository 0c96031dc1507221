//! Sizes and durations as operators write them (`"1750MiB"`, `"30s"`), parsed once
//! at the edge so the rest of the host only sees numbers.

use std::{fmt, time::Duration};

/// `"64 MiB"` → (`"64"`, `"MiB"`).
fn split_unit(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    (digits, unit.trim())
}

/// The largest size any field takes: far above any real cap, small enough that
/// sums and products of a few sizes cannot overflow.
pub const MAX_SIZE: ByteSize = ByteSize::gib(1024);

/// The longest duration any field takes (366 days): a timeout or period past it
/// is a typo, and every `Instant + duration` the host computes stays in range.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A size in bytes, written with a `B`, `KiB`, `MiB` or `GiB` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, unit) = split_unit(text);
        let shift = match unit {
            "B" | "" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {text:?} (use B, KiB, MiB or GiB, e.g. \"64MiB\")"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a size (e.g. \"64MiB\")"))?;
        n.checked_mul(1 << shift)
            .filter(|&bytes| bytes <= MAX_SIZE.0)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large (at most {MAX_SIZE})"))
    }
}

impl TryFrom<String> for ByteSize {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        if n >= 1 << 20 {
            return write!(f, "{:.1}MiB", n as f64 / (1u64 << 20) as f64);
        }
        write!(f, "{n}B")
    }
}

/// A duration written with an `ms`, `s`, `m` or `h` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, unit) = split_unit(text);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (e.g. \"30s\")"))?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {text:?} (use ms, s, m or h, e.g. \"30s\")"
                ));
            }
        };
        n.checked_mul(millis_per_unit)
            .map(Duration::from_millis)
            .filter(|d| *d <= MAX_DURATION)
            .map(HumanDuration)
            .ok_or_else(|| format!("duration {text:?} is too long (at most 8784h, 366 days)"))
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("1750MiB".parse::<ByteSize>().unwrap().bytes(), 1750 << 20);
        assert_eq!("12GiB".parse::<ByteSize>().unwrap().bytes(), 12 << 30);
        assert_eq!("512KiB".parse::<ByteSize>().unwrap().bytes(), 512 << 10);
        assert_eq!("100".parse::<ByteSize>().unwrap().bytes(), 100);
        assert!(
            "12GB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn sizes_display_in_the_largest_whole_unit() {
        assert_eq!(ByteSize::mib(1750).to_string(), "1750MiB");
        assert_eq!(ByteSize::gib(12).to_string(), "12GiB");
        assert_eq!(ByteSize(100).to_string(), "100B");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            "1h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(3600)
        );
        assert!("30".parse::<HumanDuration>().is_err());
        assert!("1d".parse::<HumanDuration>().is_err());
    }

    /// Found by a hostile tenant: these overflowed (exit 101, a worker panic) or
    /// wrapped around to a short time ("307445734561825861m" was 44 s).
    #[test]
    fn huge_durations_and_sizes_are_one_clear_error() {
        for text in [
            "2562047788015215h",
            "18446744073709551615s",
            "307445734561825861m",
            "18446744073709551615ms",
            "8785h",
            "527041m",
        ] {
            let e = text.parse::<HumanDuration>().unwrap_err();
            assert!(e.contains("too long (at most 8784h"), "{text}: {e}");
        }
        assert_eq!("8784h".parse::<HumanDuration>().unwrap().0, MAX_DURATION);
        assert!(
            "99999999999999999999s"
                .parse::<HumanDuration>()
                .unwrap_err()
                .contains("not a duration")
        );
        for text in ["1025GiB", "18446744073709551615", "17179869184GiB"] {
            assert!(
                text.parse::<ByteSize>()
                    .unwrap_err()
                    .contains("too large (at most 1024GiB)"),
                "{text}"
            );
        }
        assert_eq!("1024GiB".parse::<ByteSize>().unwrap(), MAX_SIZE);
    }
}
