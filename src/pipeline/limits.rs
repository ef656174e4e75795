//! Requests too large for the adapter, said in the user's terms. Before a generation builds its
//! plans, the graphs it needs (text encoder, UNet, and for img2img the VAE encoder) are built
//! without running anything and checked against two adapter limits: the bytes one storage
//! binding may hold (`max_storage_buffer_binding_size`, often 128 MiB) and the workgroups one
//! dispatch may count per dimension. When a graph does not fit, the largest `--batch` at this
//! size and the largest size at this batch are found by binary search over the same graph
//! builds (fitting shrinks monotonically with batch and size), and the error
//! ([`Error::TooLarge`]) names them: "--batch 100000 at 16×16 needs 940 MiB for the text
//! encoder (tensor …); this adapter binds at most 128 MiB per buffer: use --batch ≤ 13".
//!
//! The VAE decoder is not part of the check: it decodes in tiles when the whole image does not
//! fit (see [`super::tiled_decode`]), so it never limits the batch or the size.

use super::Pipeline;
use crate::error::{Error, Result, TooLarge};
use crate::graph::Graph;

/// What first exceeds a limit in a request's graphs.
#[derive(Debug, Clone, PartialEq)]
enum Overflow {
    /// A tensor larger than one storage binding.
    Bytes {
        component: &'static str,
        tensor: String,
        bytes: u64,
    },
    /// A dispatch with more workgroups in one dimension than the adapter allows.
    Workgroups {
        component: &'static str,
        dispatch: String,
        groups: u32,
    },
}

/// A request's shape: what the graphs depend on.
#[derive(Debug, Clone, Copy)]
struct Request {
    batch: usize,
    /// Latent rows and columns.
    lh: usize,
    lw: usize,
    cfg: bool,
    img2img: bool,
}

impl Pipeline {
    /// Error ([`Error::TooLarge`]) unless the plans of a generation with `batch` images of
    /// `width`×`height` pixels fit the adapter. Building the graphs runs nothing on the GPU;
    /// plans already built for these shapes are known to fit and are not checked again.
    pub fn check_fits(
        &self,
        batch: usize,
        width: usize,
        height: usize,
        cfg: bool,
        img2img: bool,
    ) -> Result<()> {
        let f = self.vae_scale_factor();
        let r = Request {
            batch,
            lh: height / f,
            lw: width / f,
            cfg,
            img2img,
        };
        let rows = if cfg { 2 * batch } else { batch };
        let cached = self.plans.text.contains_key(&(0, rows, None))
            && self
                .plans
                .unet
                .contains_key(&(rows, r.lh, r.lw, self.tokenizer.max_length()))
            && (!img2img || self.plans.encode.contains_key(&(batch, height, width)));
        if cached {
            return Ok(());
        }
        match self.overflow(r)? {
            None => Ok(()),
            Some(overflow) => Err(self.too_large(r, overflow)?),
        }
    }

    /// The first limit the graphs of `r` exceed, if any.
    fn overflow(&self, r: Request) -> Result<Option<Overflow>> {
        let rows = if r.cfg { 2 * r.batch } else { r.batch };
        let text = self.text_encoder.graph(self.dtype, rows, false)?;
        if let Some(o) = self.graph_overflow("text encoder", &text) {
            return Ok(Some(o));
        }
        // One prompt chunk: longer prompts only lengthen the (small) cross-attention keys.
        let context_len = self.tokenizer.max_length();
        let unet = self
            .unet
            .graph(self.dtype, rows, [r.lh, r.lw], context_len, false)?;
        if let Some(o) = self.graph_overflow("UNet", &unet) {
            return Ok(Some(o));
        }
        if r.img2img {
            let f = self.vae_scale_factor();
            let encode = self
                .vae
                .encode_graph(self.dtype, r.batch, [r.lh * f, r.lw * f], false)?;
            if let Some(o) = self.graph_overflow("VAE encoder (--init-image)", &encode) {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    fn graph_overflow(&self, component: &'static str, g: &Graph) -> Option<Overflow> {
        if let Some((name, bytes)) = g.largest_value() {
            if bytes > self.binding_limit {
                return Some(Overflow::Bytes {
                    component,
                    tensor: name.to_string(),
                    bytes,
                });
            }
        }
        let max_groups = self.gpu.limits.max_compute_workgroups_per_dimension;
        g.dispatches().iter().find_map(|d| {
            let groups = d.workgroups.into_iter().max().unwrap_or(0);
            (groups > max_groups).then(|| Overflow::Workgroups {
                component,
                dispatch: d.label.clone(),
                groups,
            })
        })
    }

    fn fits(&self, r: Request) -> Result<bool> {
        Ok(self.overflow(r)?.is_none())
    }

    /// The largest latent size `(lh, lw)` below the request's that fits at its batch, on the
    /// model's size grid: the exact aspect ratio where one fits (a 512×768 request gets a 2:3
    /// answer), else the ratio rounded down to the grid.
    fn largest_size(&self, r: Request) -> Result<Option<(usize, usize)>> {
        let unit = (self.size_multiple() / self.vae_scale_factor()).max(1); // latent px per step
        let (hu, wu) = (r.lh / unit, r.lw / unit);
        let fits_at = |h: usize, w: usize| {
            self.fits(Request {
                lh: h * unit,
                lw: w * unit,
                ..r
            })
        };
        let g = gcd(hu, wu);
        let (rh, rw) = (hu / g.max(1), wu / g.max(1));
        if let Some(k) = largest(1, g.saturating_sub(1), |k| fits_at(rh * k, rw * k))? {
            return Ok(Some((rh * k * unit, rw * k * unit)));
        }
        let steps = hu.max(wu);
        let scaled = |t: usize| ((hu * t / steps).max(1), (wu * t / steps).max(1));
        Ok(largest(1, steps.saturating_sub(1), |t| {
            let (h, w) = scaled(t);
            fits_at(h, w)
        })?
        .map(|t| {
            let (h, w) = scaled(t);
            (h * unit, w * unit)
        }))
    }

    /// The error for a request that does not fit, with the largest batch and size that do.
    fn too_large(&self, r: Request, overflow: Overflow) -> Result<Error> {
        let f = self.vae_scale_factor();
        let (width, height) = (r.lw * f, r.lh * f);
        // Largest batch below the requested one at this size.
        let max_batch = largest(1, r.batch - 1, |b| self.fits(Request { batch: b, ..r }))?;
        let max_size = self
            .largest_size(r)?
            .map(|(lh, lw)| (lw * f, lh * f))
            .filter(|&(w, h)| (w, h) != (width, height));

        let request = format!("--batch {} at {width}×{height}", r.batch);
        let (needed, what, limit) = match &overflow {
            Overflow::Bytes {
                component,
                tensor,
                bytes,
            } => (
                format_bytes(*bytes),
                format!("one tensor of the {component} ({tensor})"),
                format!(
                    "binds at most {} per buffer (max_storage_buffer_binding_size)",
                    format_bytes(self.binding_limit)
                ),
            ),
            Overflow::Workgroups {
                component,
                dispatch,
                groups,
            } => (
                format!("{groups} workgroups"),
                format!("one dispatch of the {component} ({dispatch})"),
                format!(
                    "runs at most {} per dimension (max_compute_workgroups_per_dimension)",
                    self.gpu.limits.max_compute_workgroups_per_dimension
                ),
            ),
        };
        let mut options = Vec::new();
        if let Some(b) = max_batch {
            options.push(format!("--batch ≤ {b}"));
        }
        if let Some((w, h)) = max_size {
            options.push(format!("a size up to {w}×{h} (-W {w} -H {h})"));
        }
        let advice = if options.is_empty() {
            "no smaller batch or size fits on this adapter".to_string()
        } else {
            format!("use {}", options.join(", or "))
        };
        Ok(Error::TooLarge(Box::new(TooLarge {
            request,
            needed,
            what,
            limit,
            advice,
            max_batch,
            max_size,
        })))
    }
}

/// The largest `n` in `lo..=hi` with `fits(n)`, assuming `fits` holds up to some point and
/// fails after it; None when `fits(lo)` fails or the range is empty.
fn largest(
    lo: usize,
    hi: usize,
    mut fits: impl FnMut(usize) -> Result<bool>,
) -> Result<Option<usize>> {
    if hi < lo || !fits(lo)? {
        return Ok(None);
    }
    let (mut good, mut bad) = (lo, hi + 1);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(Some(good))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Bytes for people: "940 MiB", "1.5 GiB", "512 KiB".
pub fn format_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.0} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_finds_the_boundary() {
        for bound in 0..40usize {
            let got = largest(1, 37, |n| Ok(n <= bound)).unwrap();
            let want = if bound == 0 {
                None
            } else {
                Some(bound.min(37))
            };
            assert_eq!(got, want, "bound {bound}");
        }
        assert_eq!(largest(1, 0, |_| Ok(true)).unwrap(), None);
    }

    #[test]
    fn bytes_read_as_people_say_them() {
        assert_eq!(format_bytes(985_600_000), "940 MiB");
        assert_eq!(format_bytes(128 << 20), "128 MiB");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(2048), "2 KiB");
        assert_eq!(format_bytes(12), "12 bytes");
    }
}
