//! Expected HTTP status codes as operators write them: `"200"`, `"200-299"`,
//! `"200-299,302"` (keepalived `status_code`, HAProxy `http-check expect status`).
//!
//! # Examples
//!
//! ```
//! use lb_health::StatusSet;
//!
//! let ok: StatusSet = "200-299,302".parse()?;
//! assert!(ok.contains(204) && ok.contains(302) && !ok.contains(301));
//! assert_eq!(ok.to_string(), "200-299,302");
//! assert!("299-200".parse::<StatusSet>().is_err());
//! # Ok::<(), lb_health::Error>(())
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A set of HTTP status codes, each in 100..=599.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusSet {
    ranges: Vec<RangeInclusive<u16>>,
}

impl StatusSet {
    /// Any 2xx: keepalived's default for `HTTP_GET`/`SSL_GET` without `status_code`.
    pub fn success() -> Self {
        Self {
            ranges: vec![200..=299],
        }
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.ranges.iter().any(|r| r.contains(&status))
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::success()
    }
}

impl FromStr for StatusSet {
    type Err = Error;

    /// Parses comma-separated codes and inclusive ranges; spaces around items are allowed.
    ///
    /// # Errors
    /// [`Error::InvalidStatusRange`] for an empty list, a non-number, a code outside
    /// 100..=599, or a range whose start is above its end.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidStatusRange(s.to_owned());
        let code = |t: &str| -> Result<u16> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match t.parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => Err(bad()),
            }
        };
        let mut ranges = Vec::new();
        for item in s.split(',') {
            let r = match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (code(a)?, code(b)?);
                    if a > b {
                        return Err(bad());
                    }
                    a..=b
                }
                None => {
                    let c = code(item)?;
                    c..=c
                }
            };
            ranges.push(r);
        }
        Ok(Self { ranges })
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let s: StatusSet = " 200 - 204 , 302".parse().unwrap();
        assert!(s.contains(200) && s.contains(204) && s.contains(302));
        assert!(!s.contains(205));
        for bad in [
            "", "abc", "99", "600", "200-", "-200", "299-200", "200,,302", "+200",
        ] {
            assert_eq!(
                bad.parse::<StatusSet>(),
                Err(Error::InvalidStatusRange(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
