//! Held-out fidelity of a scorer: mean matching score, top-1 retrieval and
//! mean rank of the true partner.

use serde::{Deserialize, Serialize};

use crate::{PairingError, Rows, Translator, cosine};

/// How faithfully a scorer maps held-out pairs: mean matching score, top-1
/// retrieval (the true partner scores highest among all references) and mean
/// rank of the true partner (1 = best).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    pub samples: usize,
    pub mean_cosine: f64,
    pub top1: f64,
    pub mean_rank: f64,
}

/// Fidelity from a full score matrix `s[i][j]` = score(probe i, reference j).
pub fn fidelity_from_matrix(s: &[Vec<f32>]) -> Fidelity {
    let n = s.len();
    let (mut sum, mut top1, mut rank_sum) = (0.0, 0usize, 0usize);
    for (i, row) in s.iter().enumerate() {
        let own = row[i];
        sum += f64::from(own);
        let better = row
            .iter()
            .enumerate()
            .filter(|(j, v)| *j != i && **v > own)
            .count();
        if better == 0 {
            top1 += 1;
        }
        rank_sum += better + 1;
    }
    let n_f = n.max(1) as f64;
    Fidelity {
        samples: n,
        mean_cosine: sum / n_f,
        top1: top1 as f64 / n_f,
        mean_rank: rank_sum as f64 / n_f,
    }
}

impl Translator {
    /// Held-out fidelity of this translator.
    pub fn fidelity(&self, probe: Rows<'_>, reference: Rows<'_>) -> Result<Fidelity, PairingError> {
        self.check(probe, reference)?;
        let t: Vec<Vec<f32>> = (0..probe.rows).map(|i| self.apply(probe.row(i))).collect();
        let s: Vec<Vec<f32>> = t
            .iter()
            .map(|ti| {
                (0..reference.rows)
                    .map(|j| cosine(ti, reference.row(j)))
                    .collect()
            })
            .collect();
        Ok(fidelity_from_matrix(&s))
    }
}
