//! Bytes as megabytes, the one way: MB means MiB everywhere (the formula, the log, the state
//! file). A leaf module.

/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// Whole MB, rounded down: the formula's inputs (`memory_mb`, `DYNO_RAM`).
pub fn whole_mb(bytes: u64) -> u64 {
    bytes / MIB
}

/// MB to one decimal, as a number: the state file's figures.
pub fn tenths_mb(bytes: u64) -> f64 {
    (bytes as f64 * 10.0 / MIB as f64).round() / 10.0
}

/// MB to one decimal with the unit, as Heroku's `sample#` lines write them: `123.4MB`.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}MB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_conversion_three_forms() {
        let bytes = 512 * MIB + 700 * 1024;
        assert_eq!(whole_mb(bytes), 512);
        assert_eq!(tenths_mb(bytes), 512.7);
        assert_eq!(mb(bytes), "512.7MB");
        assert_eq!(mb(0), "0.0MB");
        assert_eq!(whole_mb(MIB - 1), 0, "rounded down");
    }
}
