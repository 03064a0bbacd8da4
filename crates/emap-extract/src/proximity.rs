//! How near a candidate is to a code keyword: right next to it (only
//! filler words between), on the same line within a few words, or on a
//! short line of its own next to a line with one. The ranking of the code
//! finder is mostly this distance.

use crate::tokens::{Kind, Tok};

/// How many words away from a keyword a candidate on the same line still
/// counts as near it.
pub(crate) const NEAR_WORDS: usize = 12;

/// Walks from token `k` in direction `dir` over filler words (and, going
/// back, over at most one line break) and returns the first other token.
pub(crate) fn neighbour(toks: &[Tok], k: usize, back: bool) -> Option<Tok> {
    let line = toks[k].line;
    let mut idx = k;
    for _ in 0..6 {
        idx = if back { idx.checked_sub(1)? } else { idx + 1 };
        let t = *toks.get(idx)?;
        let allowed_line = if back {
            line - t.line <= 1
        } else {
            t.line == line
        };
        if !allowed_line || t.kind == Kind::Stop {
            return None;
        }
        if t.kind != Kind::Filler {
            return Some(t);
        }
    }
    None
}

/// The nearest code keyword on the same line as token `k`, within
/// [`NEAR_WORDS`] words.
#[derive(Clone, Copy)]
pub(crate) struct Near {
    /// Words between the two, plus one.
    pub(crate) dist: usize,
    /// Whether a sentence ends between the two.
    pub(crate) crossed: bool,
    /// Whether the keyword comes first.
    pub(crate) before: bool,
    /// Whether the keyword is a weak one.
    pub(crate) weak: bool,
}

pub(crate) fn nearest_keyword(toks: &[Tok], k: usize) -> Option<Near> {
    let line = toks[k].line;
    let mut best: Option<Near> = None;
    for back in [true, false] {
        let mut idx = k;
        let mut dist = 0;
        let mut crossed = false;
        loop {
            idx = if back {
                match idx.checked_sub(1) {
                    Some(p) => p,
                    None => break,
                }
            } else {
                idx + 1
            };
            let Some(t) = toks.get(idx) else { break };
            if t.line != line {
                break;
            }
            if t.kind == Kind::Stop {
                crossed = true;
                continue;
            }
            dist += 1;
            if dist > NEAR_WORDS {
                break;
            }
            if t.is_keyword() {
                let cand = Near {
                    dist,
                    crossed,
                    before: back,
                    weak: t.kind == Kind::WeakCode,
                };
                if best.is_none_or(|b| (cand.crossed, cand.dist) < (b.crossed, b.dist)) {
                    best = Some(cand);
                }
                break;
            }
        }
    }
    best
}

/// Rank 3: a code on a short line of its own (at most two words with it)
/// below one of the two non-empty lines before with a keyword, or above
/// one; a code alone on its line scores higher.
pub(crate) fn near_line_score(
    line: usize,
    rank_of_line: &[usize],
    non_empty: &[usize],
    has_code: &[bool],
    words_on_line: usize,
) -> Option<i32> {
    if words_on_line > 3 {
        return None;
    }
    let r = rank_of_line[line];
    let bonus = if words_on_line == 1 { 20 } else { 0 };
    let at = |rank: Option<usize>| {
        rank.and_then(|r| non_empty.get(r))
            .is_some_and(|&l| has_code[l])
    };
    if at(r.checked_sub(1)) {
        Some(700 + bonus)
    } else if at(r.checked_sub(2)) {
        Some(680 + bonus)
    } else if at(r.checked_add(1)) {
        Some(660 + bonus)
    } else {
        None
    }
}
