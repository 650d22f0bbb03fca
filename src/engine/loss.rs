//! Loss value and gradient over a batch of f32 outputs, with the accuracy counted on the way.

use crate::spec::Loss;

/// What a batch scored: the summed per-example loss (divide by the example count for a mean) and
/// how many predictions were right.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    pub loss_sum: f64,
    pub correct: usize,
}

impl std::ops::AddAssign for Score {
    fn add_assign(&mut self, o: Score) {
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (j, &v)| if v > row[best] { j } else { best })
}

/// Scores `out` ([B][m]) against `labels`; when `grad` is given, writes dL/dz (ce over softmax)
/// or dL/da (mse) of the batch-mean loss into it.
pub fn score(loss: Loss, out: &[f32], labels: &[u8], m: usize, grad: Option<&mut [f32]>) -> Score {
    score_over(loss, out, labels, m, grad, labels.len())
}

/// [`score`] with the gradient of the mean over `batch` examples, of which `labels` are a share
/// (data-parallel training: each rank's share of a global batch).
pub fn score_over(loss: Loss, out: &[f32], labels: &[u8], m: usize, grad: Option<&mut [f32]>, batch: usize) -> Score {
    let mut s = Score::default();
    for (row, &y) in out.chunks_exact(m).zip(labels) {
        let y = y as usize;
        s.correct += (argmax(row) == y) as usize;
        s.loss_sum += match loss {
            // A probability that underflowed to zero is read as the smallest normal f32, so a
            // hopeless prediction costs about 87 rather than infinity.
            Loss::Ce => -(row[y].max(f32::MIN_POSITIVE) as f64).ln(),
            Loss::Mse => {
                row.iter().enumerate().map(|(j, &a)| (a as f64 - (j == y) as u8 as f64).powi(2)).sum::<f64>() / m as f64
            }
        };
    }
    if let Some(grad) = grad {
        let scale = match loss {
            Loss::Ce => 1.0 / batch as f32,
            Loss::Mse => 2.0 / (batch * m) as f32,
        };
        for ((g, row), &y) in grad.chunks_exact_mut(m).zip(out.chunks_exact(m)).zip(labels) {
            for (j, (g, &a)) in g.iter_mut().zip(row).enumerate() {
                *g = (a - (j == y as usize) as u8 as f32) * scale;
            }
        }
    }
    s
}
