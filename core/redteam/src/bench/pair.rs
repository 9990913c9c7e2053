//! One pair direction of the bench: a ridge translator (zooaudit-pairing,
//! fitted directly, as the paper does) on the fit faces, scores, and the
//! clean calibration and held-out scores.

use zooaudit_audit::stats::threshold_at;
use zooaudit_pairing::{FitOptions, Rows};

use super::OPS;
use super::data::{Faces, ModelEmb};
use crate::RedteamError;

/// Scores of one pair direction.
pub(super) struct PairScores {
    pub(super) thresholds: Vec<f32>,
    pub(super) genuine: Vec<f32>,
    pub(super) zei: Vec<f32>,
}

pub(super) struct Pair<'a> {
    pub(super) probe: &'a ModelEmb,
    pub(super) reference: &'a ModelEmb,
    pub(super) translator: zooaudit_pairing::Translator,
}

impl Pair<'_> {
    pub(super) fn fit<'a>(
        probe: &'a ModelEmb,
        reference: &'a ModelEmb,
        fit_idx: &[usize],
        seed: u64,
    ) -> Result<Pair<'a>, RedteamError> {
        let p = probe.gather(&probe.clean, fit_idx);
        let r = reference.gather(&reference.clean, fit_idx);
        let opts = FitOptions {
            seed,
            ..Default::default()
        };
        let (translator, _) = zooaudit_pairing::fit(
            Rows::new(&p, probe.dim)?,
            Rows::new(&r, reference.dim)?,
            &opts,
        )?;
        Ok(Pair {
            probe,
            reference,
            translator,
        })
    }

    pub(super) fn score(
        &self,
        probe_data: &[f32],
        ref_data: &[f32],
        idx: &[usize],
    ) -> Result<Vec<f32>, RedteamError> {
        let p = self.probe.gather(probe_data, idx);
        let r = self.reference.gather(ref_data, idx);
        self.translator
            .score(
                Rows::new(&p, self.probe.dim)?,
                Rows::new(&r, self.reference.dim)?,
            )
            .map_err(RedteamError::from)
    }

    pub(super) fn clean(
        &self,
        cal: &[usize],
        held: &[usize],
        faces: &Faces,
    ) -> Result<PairScores, RedteamError> {
        let cal_scores = self.score(&self.probe.clean, &self.reference.clean, cal)?;
        let thresholds = OPS
            .iter()
            .map(|&op| {
                threshold_at(&cal_scores, op)
                    .map(|t| t.threshold)
                    .unwrap_or(f32::NAN)
            })
            .collect();
        let genuine = self.score(&self.probe.clean, &self.reference.clean, held)?;
        // ZEI: probe of face i against reference of the next held-out face
        // of another (or an unknown) identity.
        let n = held.len();
        let mut zei = Vec::with_capacity(n);
        for k in 0..n {
            let i = held[k];
            if let Some(j) = (1..n)
                .map(|s| held[(k + s) % n])
                .find(|&j| !(faces.identity[i].is_some() && faces.identity[i] == faces.identity[j]))
            {
                let t = self.translator.apply(self.probe.row(&self.probe.clean, i));
                zei.push(zooaudit_pairing::cosine(
                    &t,
                    self.reference.row(&self.reference.clean, j),
                ));
            }
        }
        Ok(PairScores {
            thresholds,
            genuine,
            zei,
        })
    }
}
