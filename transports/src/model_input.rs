//! Where the model-based checks of the queues draw their operations from. Each check has
//! two drivers: a proptest strategy (`cargo test`) and a decoder of fuzz input (the
//! `fuzzing` feature, for libFuzzer). Both draw every number from the same [`Weighted`]
//! table and every kind of operation with the same weights, so that the fuzzer explores
//! what the proptests do, and a table changed in one place changes both.

use std::ops::RangeInclusive;

use arbitrary::unstructured::Int;
use arbitrary::Unstructured;

/// Ranges of numbers, each with a weight: a draw picks a range with probability
/// weight / (sum of the weights), then a number in it. A single value is a range of one.
pub(crate) struct Weighted<T: 'static>(pub(crate) &'static [(u32, RangeInclusive<T>)]);

impl<T: Int> Weighted<T> {
    /// A number decoded from fuzz input (the first range's first number once the input
    /// runs out).
    pub(crate) fn draw(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<T> {
        let weights: Vec<u32> = self.0.iter().map(|(weight, _)| *weight).collect();
        let range = &self.0[pick(u, &weights)?].1;
        u.int_in_range(range.clone())
    }
}

#[cfg(test)]
impl<T> Weighted<T>
where
    T: Clone + std::fmt::Debug,
    RangeInclusive<T>: proptest::strategy::Strategy<Value = T>,
{
    /// The same distribution as a proptest strategy (which shrinks towards the first
    /// range, then towards the low end of a range, as `prop_oneof!` does).
    pub(crate) fn strategy(&self) -> proptest::strategy::BoxedStrategy<T> {
        use proptest::strategy::{Strategy, Union};
        let ranges = self
            .0
            .iter()
            .map(|(weight, range)| (*weight, range.clone().boxed()))
            .collect();
        Union::new_weighted(ranges).boxed()
    }
}

/// The index of one of `weights`, picked with probability weight / (sum of the weights):
/// how a decoder picks the kind of an operation (the proptests give the same weights to
/// `prop_oneof!`).
pub(crate) fn pick(u: &mut Unstructured<'_>, weights: &[u32]) -> arbitrary::Result<usize> {
    let total: u32 = weights.iter().sum();
    let mut at = u.int_in_range(0..=total - 1)?;
    for (index, &weight) in weights.iter().enumerate() {
        if at < weight {
            return Ok(index);
        }
        at -= weight;
    }
    unreachable!("{at} is below the sum of the weights")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_their_ranges_and_follow_the_weights() {
        const TABLE: Weighted<usize> = Weighted(&[(3, 0..=9), (1, 100..=100)]);
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut u = Unstructured::new(&data);
        let (mut low, mut high) = (0, 0);
        while !u.is_empty() {
            match TABLE.draw(&mut u).unwrap() {
                0..=9 => low += 1,
                100 => high += 1,
                other => panic!("{other} is in no range"),
            }
        }
        assert!(high > 0 && low > 2 * high, "{low} low, {high} high");
        // Out of input: the first range's first number.
        assert_eq!(TABLE.draw(&mut Unstructured::new(&[])).unwrap(), 0);
    }
}
