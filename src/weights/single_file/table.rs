//! A rename table between LDM (original Stable Diffusion / A1111) tensor names and stipple's
//! diffusers names, usable in both directions.
//!
//! Each [`Rule`] maps one LDM name, or every LDM name under a prefix, to diffusers name(s):
//!
//! - [`Target::Rename`]: same bytes, same shape, new name. A rule whose LDM side ends with `.`
//!   is a prefix rule (`…input_blocks.1.0.in_layers.0.` → `unet.down_blocks.0.resnets.0.norm1.`
//!   renames `….weight` and `….bias`); any other rule matches one exact name.
//! - [`Target::Squeeze`]: same bytes, `(C, C, 1, 1)` 1×1-conv weight ↔ `(C, C)` linear weight
//!   (the VAE's mid-block attention).
//! - [`Target::Transpose`]: same bytes, a 2-D tensor read transposed (OpenCLIP's
//!   `text_projection`, applied as `x @ P`, is diffusers' Linear weight `Pᵀ`).
//! - [`Target::Rows`]: one LDM tensor split into equal blocks of rows, one diffusers tensor
//!   each (OpenCLIP's fused `in_proj_weight` → q/k/v): each part is a byte sub-range of the
//!   source, so nothing is copied.
//!
//! LDM names matching an `ignore` prefix (EMA copies, DDPM schedule buffers, layers past the
//! config's) are dropped deliberately. The longest matching rule wins.

/// What an LDM tensor becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Rename(String),
    Squeeze(String),
    Transpose(String),
    Rows(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub ldm: String,
    pub target: Target,
}

/// How one LDM tensor maps ([`Table::to_diffusers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// Deliberately not loaded.
    Ignored,
    /// No rule: kept under its LDM name, so `Weights::finish` reports it as unused.
    Unknown,
    Rename(String),
    Squeeze(String),
    Transpose(String),
    Rows(Vec<String>),
}

/// Where a diffusers tensor comes from ([`Table::to_ldm`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub ldm: String,
    pub part: Part,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// The LDM tensor has two extra trailing 1-sized dimensions.
    Squeezed,
    /// The LDM tensor is the transpose of the diffusers one (2-D).
    Transposed,
    /// Row block `index` of `count` equal blocks.
    Rows {
        index: usize,
        count: usize,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub rules: Vec<Rule>,
    /// LDM name prefixes (or exact names) never loaded.
    pub ignore: Vec<String>,
}

/// `name` matches `pattern` exactly, or starts with it when it ends with `.`.
fn matches(name: &str, pattern: &str) -> bool {
    name == pattern || (pattern.ends_with('.') && name.starts_with(pattern))
}

impl Table {
    pub fn rename(&mut self, ldm: impl Into<String>, diffusers: impl Into<String>) {
        self.rules.push(Rule {
            ldm: ldm.into(),
            target: Target::Rename(diffusers.into()),
        });
    }

    pub fn squeeze(&mut self, ldm: impl Into<String>, diffusers: impl Into<String>) {
        self.rules.push(Rule {
            ldm: ldm.into(),
            target: Target::Squeeze(diffusers.into()),
        });
    }

    pub fn transpose(&mut self, ldm: impl Into<String>, diffusers: impl Into<String>) {
        self.rules.push(Rule {
            ldm: ldm.into(),
            target: Target::Transpose(diffusers.into()),
        });
    }

    pub fn rows(&mut self, ldm: impl Into<String>, parts: Vec<String>) {
        self.rules.push(Rule {
            ldm: ldm.into(),
            target: Target::Rows(parts),
        });
    }

    pub fn extend(&mut self, other: Table) {
        self.rules.extend(other.rules);
        self.ignore.extend(other.ignore);
    }

    /// The diffusers name(s) of an LDM tensor.
    pub fn to_diffusers(&self, ldm: &str) -> Mapped {
        let rule = self
            .rules
            .iter()
            .filter(|r| matches(ldm, &r.ldm))
            .max_by_key(|r| r.ldm.len());
        if let Some(rule) = rule {
            let rest = &ldm[rule.ldm.len()..];
            return match &rule.target {
                Target::Rename(d) => Mapped::Rename(format!("{d}{rest}")),
                Target::Squeeze(d) => Mapped::Squeeze(d.clone()),
                Target::Transpose(d) => Mapped::Transpose(d.clone()),
                Target::Rows(parts) => Mapped::Rows(parts.clone()),
            };
        }
        if self.ignore.iter().any(|p| matches(ldm, p)) {
            Mapped::Ignored
        } else {
            Mapped::Unknown
        }
    }

    /// The LDM tensor a diffusers name is read from (the inverse of [`Table::to_diffusers`]).
    pub fn to_ldm(&self, diffusers: &str) -> Option<Source> {
        let mut best: Option<(usize, Source)> = None;
        for rule in &self.rules {
            let found = match &rule.target {
                Target::Rename(d) if matches(diffusers, d) => Some((
                    d.len(),
                    Source {
                        ldm: format!("{}{}", rule.ldm, &diffusers[d.len()..]),
                        part: Part::Whole,
                    },
                )),
                Target::Squeeze(d) if d == diffusers => Some((
                    d.len(),
                    Source {
                        ldm: rule.ldm.clone(),
                        part: Part::Squeezed,
                    },
                )),
                Target::Transpose(d) if d == diffusers => Some((
                    d.len(),
                    Source {
                        ldm: rule.ldm.clone(),
                        part: Part::Transposed,
                    },
                )),
                Target::Rows(parts) => parts.iter().position(|p| p == diffusers).map(|index| {
                    (
                        diffusers.len(),
                        Source {
                            ldm: rule.ldm.clone(),
                            part: Part::Rows {
                                index,
                                count: parts.len(),
                            },
                        },
                    )
                }),
                _ => None,
            };
            if let Some((len, source)) = found {
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    best = Some((len, source));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    /// `(ldm, diffusers)` of every rename rule whose LDM side starts with `ldm_prefix` (tests).
    pub fn renames_under(&self, ldm_prefix: &str) -> Vec<(&str, &str)> {
        self.rules
            .iter()
            .filter_map(|r| match &r.target {
                Target::Rename(d) if r.ldm.starts_with(ldm_prefix) => {
                    Some((r.ldm.as_str(), d.as_str()))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::default();
        t.rename("a.b.", "x.");
        t.rename("a.b.c.", "y.z.");
        t.rename("a.exact", "e.weight");
        t.squeeze("a.q.weight", "s.to_q.weight");
        t.rows(
            "a.in_proj_weight",
            vec![
                "r.q.weight".into(),
                "r.k.weight".into(),
                "r.v.weight".into(),
            ],
        );
        t.transpose("a.text_projection", "p.text_projection.weight");
        t.ignore.push("ema.".into());
        t
    }

    #[test]
    fn prefix_rules_take_the_longest_match() {
        let t = table();
        assert_eq!(t.to_diffusers("a.b.w"), Mapped::Rename("x.w".into()));
        assert_eq!(t.to_diffusers("a.b.c.w"), Mapped::Rename("y.z.w".into()));
        // `a.b.` must not match `a.bb.`: prefixes end at a dot.
        assert_eq!(t.to_diffusers("a.bb.w"), Mapped::Unknown);
    }

    #[test]
    fn exact_rules_match_only_the_name() {
        let t = table();
        assert_eq!(t.to_diffusers("a.exact"), Mapped::Rename("e.weight".into()));
        assert_eq!(t.to_diffusers("a.exact.more"), Mapped::Unknown);
    }

    #[test]
    fn ignored_and_unknown() {
        let t = table();
        assert_eq!(t.to_diffusers("ema.a.b.w"), Mapped::Ignored);
        assert_eq!(t.to_diffusers("zzz"), Mapped::Unknown);
    }

    #[test]
    fn inverse_of_every_kind() {
        let t = table();
        let whole = |ldm: &str| {
            Some(Source {
                ldm: ldm.into(),
                part: Part::Whole,
            })
        };
        assert_eq!(t.to_ldm("x.w"), whole("a.b.w"));
        assert_eq!(t.to_ldm("y.z.w"), whole("a.b.c.w"));
        assert_eq!(t.to_ldm("e.weight"), whole("a.exact"));
        assert_eq!(
            t.to_ldm("s.to_q.weight"),
            Some(Source {
                ldm: "a.q.weight".into(),
                part: Part::Squeezed
            })
        );
        assert_eq!(
            t.to_ldm("r.k.weight"),
            Some(Source {
                ldm: "a.in_proj_weight".into(),
                part: Part::Rows { index: 1, count: 3 }
            })
        );
        assert_eq!(
            t.to_diffusers("a.text_projection"),
            Mapped::Transpose("p.text_projection.weight".into())
        );
        assert_eq!(
            t.to_ldm("p.text_projection.weight"),
            Some(Source {
                ldm: "a.text_projection".into(),
                part: Part::Transposed
            })
        );
        assert_eq!(t.to_ldm("nothing"), None);
    }
}
