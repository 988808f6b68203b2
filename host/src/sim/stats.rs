//! Estimates with confidence intervals: the first observations (the warm-up, while the model
//! fills from empty) are dropped, the rest cut into consecutive batches whose means are taken as
//! roughly independent, and the interval is Student's t over the batch means.

/// A mean and the half-width of its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    pub half_width: f64,
    /// Observations the estimate is made of (after the warm-up).
    pub observations: usize,
}

impl Estimate {
    pub fn contains(&self, x: f64) -> bool {
        (self.mean - x).abs() <= self.half_width
    }
}

/// The batch-means estimate of the mean of `values` after dropping the first `warmup`, in
/// `batches` batches (at least 2; a remainder that does not fill a batch is dropped). `None` when
/// there are fewer observations than batches.
pub fn batch_means(values: &[f64], warmup: usize, batches: usize) -> Option<Estimate> {
    let batches = batches.max(2);
    let kept = values.get(warmup..)?;
    let size = kept.len() / batches;
    if size == 0 {
        return None;
    }
    let means: Vec<f64> = kept
        .chunks_exact(size)
        .take(batches)
        .map(|b| b.iter().sum::<f64>() / size as f64)
        .collect();
    let k = means.len() as f64;
    let mean = means.iter().sum::<f64>() / k;
    let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (k - 1.0);
    Some(Estimate {
        mean,
        half_width: t_975(means.len() - 1) * (var / k).sqrt(),
        observations: size * means.len(),
    })
}

/// The `q` quantile (0..=1) of `values`, by the nearest rank (NaN for none).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The `q` quantile of `values` (kept in order, the warm-up already dropped) with a batch
/// interval: the point is the quantile of all of them; the half-width is Student's t over the
/// quantiles of up to `batches` consecutive batches (their spread, over the root of their
/// number). A tail quantile takes fewer, larger batches, so that each holds ten values beyond
/// it; `None` when that leaves fewer than five.
pub fn batch_quantile(values: &[f64], batches: usize, q: f64) -> Option<Estimate> {
    let tail = (values.len() as f64 * (1.0 - q.clamp(0.0, 1.0)) / 10.0) as usize;
    let batches = batches.min(tail);
    if batches < 5 {
        return None;
    }
    let size = values.len() / batches;
    let per_batch: Vec<f64> = values
        .chunks_exact(size)
        .take(batches)
        .map(|b| quantile(b, q))
        .collect();
    let k = per_batch.len() as f64;
    let m = per_batch.iter().sum::<f64>() / k;
    let var = per_batch.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1.0);
    Some(Estimate {
        mean: quantile(values, q),
        half_width: t_975(per_batch.len() - 1) * (var / k).sqrt(),
        observations: size * per_batch.len(),
    })
}

/// Student's t 97.5% quantile for `df` degrees of freedom (Cornish-Fisher expansion around the
/// normal quantile: within 0.1% of the table from 10 degrees of freedom up).
fn t_975(df: usize) -> f64 {
    let z: f64 = 1.959_964;
    let n = df.max(1) as f64;
    z + (z.powi(3) + z) / (4.0 * n)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * n.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert!((quantile(&v, 0.5) - 500.0).abs() < f64::EPSILON);
        assert!((quantile(&v, 0.999) - 999.0).abs() < f64::EPSILON);
        assert!((quantile(&v, 1.0) - 1000.0).abs() < f64::EPSILON);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn t_quantiles_match_the_table() {
        for (df, table) in [(10, 2.228), (19, 2.093), (29, 2.045), (100, 1.984)] {
            assert!((t_975(df) - table).abs() < 0.003, "df {df}: {}", t_975(df));
        }
    }

    #[test]
    fn the_warm_up_is_dropped_and_the_interval_covers_a_constant() {
        let mut v = vec![100.0; 10];
        v.extend((0..1000).map(|i| if i % 2 == 0 { 1.0 } else { 3.0 }));
        let e = batch_means(&v, 10, 20).expect("enough");
        assert_eq!(e.observations, 1000);
        assert!(e.contains(2.0) && e.half_width < 1e-9, "{e:?}");
        assert!(batch_means(&v, 2000, 20).is_none());
    }

    #[test]
    fn a_batch_quantile_is_the_whole_quantile_with_the_batches_spread() {
        let v: Vec<f64> = (0..20_000).map(|i| f64::from(i % 1000)).collect();
        let e = batch_quantile(&v, 20, 0.99).expect("enough");
        assert!((e.mean - 989.0).abs() < f64::EPSILON, "{e:?}");
        assert!(
            e.half_width < 1e-9,
            "every batch has the same quantile: {e:?}"
        );
        assert!(
            batch_quantile(&v, 20, 0.9999).is_none(),
            "batches too small"
        );
    }
}
