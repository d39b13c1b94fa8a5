//! Fixed-point credit and hour quantities.
//!
//! Credits and hours arrive as JSON numbers (binary floats). Converting them
//! once, at the edge, to integers on a decimal grid (0.001 credit, 0.01 hour)
//! makes every later computation exact: flooring `2.7` credits can never
//! produce `2.6` because of float noise, and "never round up" is a plain
//! integer inequality.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Upper bound on credits in one record; far above any real award, low
/// enough that every product below fits a `u64` with room to spare.
pub const MAX_CREDITS: u64 = 1_000_000;
/// Upper bound on learning hours in one record.
pub const MAX_HOURS: u64 = 1_000_000;

const CREDIT_SCALE: u64 = 1000;
const HOUR_SCALE: u64 = 100;

/// A credit amount in thousandths of a credit, `0..=MAX_CREDITS` credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(u64);

/// Learning hours in hundredths of an hour, `0..=MAX_HOURS` hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hours(u64);

/// Converts a float to a count of `1/scale` units if it is finite,
/// non-negative, at most `max` and (within float noise) on the grid.
fn to_grid(value: f64, scale: u64, max: u64) -> Result<u64, String> {
    if !value.is_finite() {
        return Err("must be a finite number".into());
    }
    if value < 0.0 {
        return Err("must not be negative".into());
    }
    if value > max as f64 {
        return Err(format!("must be at most {max}"));
    }
    let scaled = value * scale as f64;
    let units = scaled.round();
    // The tolerance (a few ulps) only absorbs the float noise of decimal
    // literals (0.29 * 1000 is 289.99999999999997); anything finer than the
    // grid, however small (1e-100), is rejected rather than rounded.
    if (scaled - units).abs() > scaled * 4.0 * f64::EPSILON {
        return Err(format!("must have at most {} decimal places", scale.ilog10()));
    }
    // `units` is a whole number in 0..=max*scale, so the cast is exact.
    Ok(units as u64)
}

/// JSON for a grid value: an integer when whole, else the shortest decimal.
fn grid_json(units: u64, scale: u64) -> Value {
    if units % scale == 0 {
        Value::from(units / scale)
    } else {
        Value::from(units as f64 / scale as f64)
    }
}

impl Credits {
    /// `value` credits, if finite, in `0..=MAX_CREDITS` with at most 3 decimals.
    pub fn from_f64(value: f64) -> Result<Self, String> {
        to_grid(value, CREDIT_SCALE, MAX_CREDITS).map(Credits)
    }

    /// Whole thousandths of a credit; `None` above `MAX_CREDITS`.
    pub fn from_millis(millis: u64) -> Option<Self> {
        (millis <= MAX_CREDITS * CREDIT_SCALE).then_some(Credits(millis))
    }

    pub fn millis(self) -> u64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / CREDIT_SCALE as f64
    }

    pub fn to_json(self) -> Value {
        grid_json(self.0, CREDIT_SCALE)
    }
}

impl Hours {
    /// `value` hours, if finite, in `0..=MAX_HOURS` with at most 2 decimals.
    pub fn from_f64(value: f64) -> Result<Self, String> {
        to_grid(value, HOUR_SCALE, MAX_HOURS).map(Hours)
    }

    /// Whole hundredths of an hour; `None` above `MAX_HOURS`.
    pub fn from_centis(centis: u64) -> Option<Self> {
        (centis <= MAX_HOURS * HOUR_SCALE).then_some(Hours(centis))
    }

    pub fn centis(self) -> u64 {
        self.0
    }

    /// Thousandths of an hour, the unit credit conversion works in.
    pub fn millis(self) -> u64 {
        self.0 * (1000 / HOUR_SCALE)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / HOUR_SCALE as f64
    }

    pub fn to_json(self) -> Value {
        grid_json(self.0, HOUR_SCALE)
    }
}

impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Credits::from_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Hours {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Hours::from_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_land_exactly_on_the_grid() {
        assert_eq!(Credits::from_f64(0.29).unwrap().millis(), 290);
        assert_eq!(Credits::from_f64(2.7).unwrap().millis(), 2700);
        assert_eq!(Hours::from_f64(67.5).unwrap().centis(), 6750);
    }

    #[test]
    fn off_grid_and_out_of_range_values_are_rejected() {
        assert!(Credits::from_f64(0.0005).is_err());
        assert!(Credits::from_f64(1e-100).is_err());
        assert!(Credits::from_f64(0.4999999999).is_err());
        assert!(Credits::from_f64(-1.0).is_err());
        assert!(Credits::from_f64(f64::NAN).is_err());
        assert!(Credits::from_f64(f64::INFINITY).is_err());
        assert!(Credits::from_f64(1e300).is_err());
        assert!(Hours::from_f64(1.001).is_err());
    }

    #[test]
    fn json_is_integer_when_whole() {
        assert_eq!(Credits::from_f64(4.0).unwrap().to_json().to_string(), "4");
        assert_eq!(Credits::from_f64(2.5).unwrap().to_json().to_string(), "2.5");
        assert_eq!(Hours::from_f64(0.1).unwrap().to_json().to_string(), "0.1");
    }
}
