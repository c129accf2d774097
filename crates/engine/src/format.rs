//! Sizes and durations written the way Stash writes them in statuses.

use std::time::Duration;

/// `1.234 GiB`, `12.000 MiB`, `512 B` — Stash's status format.
pub fn size(bytes: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("TiB", 1024f64 * 1024.0 * 1024.0 * 1024.0),
        ("GiB", 1024f64 * 1024.0 * 1024.0),
        ("MiB", 1024f64 * 1024.0),
        ("KiB", 1024f64),
    ];
    let b = bytes as f64;
    for (unit, scale) in UNITS {
        if b >= scale {
            return format!("{:.3} {unit}", b / scale);
        }
    }
    format!("{bytes} B")
}

/// `H:MM:SS` or `M:SS`, as Stash prints processing time.
pub fn processing_time(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stash_formats() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.500 KiB");
        assert_eq!(size(12 * 1024 * 1024), "12.000 MiB");
        assert_eq!(processing_time(Duration::from_secs(61)), "1:01");
        assert_eq!(processing_time(Duration::from_secs(3723)), "1:02:03");
    }
}
