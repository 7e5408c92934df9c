//! Chunking on token boundaries: `index` asks `candle` for the word pieces of each text
//! (`model.tokenize`: byte offsets, over the bus, in batches), then cuts every text longer than
//! the model's `max_tokens - 2` word pieces (`[CLS]` and `[SEP]` take the other two) into
//! chunks of at most that many, so the model never truncates a chunk: no text is cut silently.
//!
//! - A text that fits is one chunk: the text as sent.
//! - A chunk ends at a word-piece boundary in the second half of its window: preferably one
//!   with whitespace in front of the next piece (between words), else one at punctuation (not
//!   between a word and its `##` continuation, which would tokenize differently on its own);
//!   only a word of more than half a window of pieces would be cut inside (BERT makes one
//!   `[UNK]` of a word over 100 characters, so with 254 pieces that never happens).
//! - The next chunk repeats at most `overlap` word pieces of the previous one (capped at half
//!   a window), starting at the first boundary among them chosen the same way.
//! - Each chunk's text is the exact substring of the text between its first and last word
//!   piece (the first chunk from the text's start, the last to its end).

use std::ops::Range;

use bkg_abi::serde_json::json;
use bkg_abi::{Error, Host};
use serde_json::Value;

use crate::embed::{with_model, BACKEND};

/// The most texts, and about the most bytes of text, in one `model.tokenize` call.
const TOKENIZE_TEXTS: usize = 256;
const TOKENIZE_BYTES: usize = 4 << 20;

/// The word pieces of one text: byte ranges of the text, in order.
pub type Pieces = Vec<(usize, usize)>;

/// The word pieces of each of `texts` by `model` (loaded into `candle` when missing), and the
/// model's truncation length in word pieces (with `[CLS]` and `[SEP]`).
pub fn tokenize(host: &Host, model: &str, texts: &[&str]) -> Result<(Vec<Pieces>, usize), Error> {
    let mut out = Vec::with_capacity(texts.len());
    let mut max_tokens = None;
    let mut from = 0;
    while from < texts.len() {
        let mut to = from + 1;
        let mut bytes = texts[from].len();
        while to < texts.len() && to - from < TOKENIZE_TEXTS && bytes < TOKENIZE_BYTES {
            bytes += texts[to].len();
            to += 1;
        }
        let group = &texts[from..to];
        let body = json!({ "model": model, "input": group });
        let v: Value = with_model(host, model, || {
            host.call_json(BACKEND, "model.tokenize", &body)?.parse_json()
        })?;
        let bad =
            |what: &str| Error::internal(format!("{BACKEND}'s model.tokenize answer: {what}"));
        let lists = v["tokens"].as_array().ok_or_else(|| bad("no tokens"))?;
        if lists.len() != group.len() {
            return Err(bad(&format!("{} token lists for {} texts", lists.len(), group.len())));
        }
        for (text, list) in group.iter().zip(lists) {
            let list = list.as_array().ok_or_else(|| bad("a token list is not an array"))?;
            let pieces = list
                .iter()
                .map(|p| match (p["start"].as_u64(), p["end"].as_u64()) {
                    (Some(s), Some(e)) => Ok((s as usize, e as usize)),
                    _ => Err(bad(&format!("a word piece without start and end: {p}"))),
                })
                .collect::<Result<Pieces, Error>>()?;
            check(text, &pieces)?;
            out.push(pieces);
        }
        let m = v["max_tokens"].as_u64().ok_or_else(|| bad("no max_tokens"))? as usize;
        if m < 3 {
            return Err(bad(&format!("max_tokens {m} leaves no room for a word piece")));
        }
        max_tokens = Some(m);
        from = to;
    }
    Ok((out, max_tokens.unwrap_or(3)))
}

/// Word pieces must lie in the text, on character boundaries, in order: otherwise a chunk
/// could lose text, so it is an error rather than a guess.
fn check(text: &str, pieces: &[(usize, usize)]) -> Result<(), Error> {
    let mut last = 0;
    for &(s, e) in pieces {
        if s > e || e > text.len() || !text.is_char_boundary(s) || !text.is_char_boundary(e) {
            return Err(Error::internal(format!(
                "{BACKEND} gave a word piece at bytes {s}..{e} of a {}-byte text, not on its \
                 character boundaries",
                text.len()
            )));
        }
        if s < last {
            return Err(Error::internal(format!(
                "{BACKEND} gave word pieces out of order (bytes {s}..{e} after one at {last})"
            )));
        }
        last = s;
    }
    Ok(())
}

/// The byte ranges of `text`'s chunks of at most `max` word pieces (`pieces`, as from
/// [`tokenize`]), overlapping by at most `overlap`. See the module's notes.
pub fn cut(text: &str, pieces: &[(usize, usize)], max: usize, overlap: usize) -> Vec<Range<usize>> {
    let n = pieces.len();
    let max = max.max(1);
    if n <= max {
        return std::iter::once(0..text.len()).collect();
    }
    let overlap = overlap.min(max / 2);
    // Is there whitespace in front of piece i (so a chunk may end before it, between words)?
    let word_start = |i: usize| {
        text.get(pieces[i - 1].1..pieces[i].0).is_some_and(|gap| gap.contains(char::is_whitespace))
    };
    // Does piece i continue the word of piece i-1 (a `##` piece: letters on both sides)? A
    // chunk cut there would be tokenized differently on its own; one cut at punctuation not.
    let inside_word = |i: usize| {
        let before = text[..pieces[i].0].chars().next_back();
        let after = text[pieces[i].0..].chars().next();
        pieces[i - 1].1 >= pieces[i].0
            && before.is_some_and(char::is_alphanumeric)
            && after.is_some_and(char::is_alphanumeric)
    };
    // The best boundary in `range` (tried from its end, or from its start): between words,
    // else not inside a word, else `fallback`.
    let best = |range: Range<usize>, from_end: bool, fallback: usize| {
        let pick = |ok: &dyn Fn(usize) -> bool| {
            if from_end {
                range.clone().rev().find(|&i| ok(i))
            } else {
                range.clone().find(|&i| ok(i))
            }
        };
        pick(&word_start).or_else(|| pick(&|i| !inside_word(i))).unwrap_or(fallback)
    };
    let mut out = Vec::new();
    let mut s = 0;
    loop {
        let begin = if s == 0 { 0 } else { pieces[s].0 };
        if n - s <= max {
            out.push(begin..text.len());
            return out;
        }
        // The end (exclusive) in the second half of the window, at a word start if any. The
        // chunk is longer than `overlap`, so the next one starts further on.
        let hard = s + max;
        let e = best(s + max / 2 + 1..hard + 1, true, hard);
        out.push(begin..pieces[e - 1].1);
        let back = e - overlap;
        s = if overlap == 0 { e } else { best(back..e, false, back) };
    }
}

/// `texts` cut into chunks for `model`: per text its chunks' texts (substrings), each at most
/// `max_tokens - 2` word pieces (the second value), overlapping by at most `overlap`.
pub fn split(
    host: &Host,
    model: &str,
    texts: &[&str],
    overlap: usize,
) -> Result<(Vec<Vec<String>>, usize), Error> {
    if texts.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let (pieces, max_tokens) = tokenize(host, model, texts)?;
    let max = max_tokens - 2;
    let chunks = texts
        .iter()
        .zip(&pieces)
        .map(|(text, p)| {
            cut(text, p, max, overlap).into_iter().map(|r| text[r].to_string()).collect()
        })
        .collect();
    Ok((chunks, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for BERT's word pieces: each run of letters/digits in pieces of at most 4
    /// characters (the later ones like `##xxx`), each other non-space character alone.
    fn pieces(text: &str) -> Pieces {
        let mut out = Vec::new();
        let mut run: Option<(usize, usize)> = None; // (start, chars so far)
        for (i, c) in text.char_indices() {
            if c.is_alphanumeric() {
                run = match run {
                    Some((start, count)) if count < 4 => Some((start, count + 1)),
                    Some((start, _)) => {
                        out.push((start, i));
                        Some((i, 1))
                    }
                    None => Some((i, 1)),
                };
                continue;
            }
            if let Some((start, _)) = run.take() {
                out.push((start, i));
            }
            if !c.is_whitespace() {
                out.push((i, i + c.len_utf8()));
            }
        }
        if let Some((start, _)) = run {
            out.push((start, text.len()));
        }
        out
    }

    fn chunks(text: &str, max: usize, overlap: usize) -> Vec<&str> {
        let p = pieces(text);
        check(text, &p).unwrap();
        cut(text, &p, max, overlap).into_iter().map(|r| &text[r]).collect()
    }

    /// The pieces of `text` that lie wholly in `range`.
    fn inside(p: &Pieces, range: &Range<usize>) -> Vec<(usize, usize)> {
        p.iter().copied().filter(|&(s, e)| s >= range.start && e <= range.end).collect()
    }

    const PROSE: &str = "The licenses for most software and other practical works are designed \
        to take away your freedom to share and change the works. By contrast, the GNU General \
        Public License is intended to guarantee your freedom to share and change all versions \
        of a program--to make sure it remains free software for all its users. We, the Free \
        Software Foundation, use the GNU General Public License for most of our software; it \
        applies also to any other work released this way by its authors.";

    #[test]
    fn a_text_that_fits_stays_whole() {
        let text = "  A short text, with its spaces.\n";
        assert!(pieces(text).len() <= 10);
        assert_eq!(chunks(text, 10, 3), [text]);
        assert_eq!(chunks(text, pieces(text).len(), 3), [text]);
        assert_eq!(chunks("", 10, 3), [""]);
    }

    #[test]
    fn chunks_hold_at_most_max_pieces_cover_every_piece_and_overlap() {
        for (max, overlap) in [(20, 5), (30, 0), (7, 3), (50, 32), (3, 1), (1, 0), (2, 9)] {
            let p = pieces(PROSE);
            assert!(p.len() > max, "{max}");
            let ranges = cut(PROSE, &p, max, overlap);
            assert!(ranges.len() > 1);
            let mut covered = vec![false; p.len()];
            let mut previous: Option<Vec<(usize, usize)>> = None;
            for r in &ranges {
                let mine = inside(&p, r);
                assert!(!mine.is_empty() && mine.len() <= max, "{max} {overlap}: {r:?}");
                for piece in &mine {
                    covered[p.iter().position(|x| x == piece).unwrap()] = true;
                }
                if let Some(prev) = previous {
                    // The overlap: at most `overlap` (capped at half a window) pieces repeat,
                    // and the chunks move forward.
                    let repeated = mine.iter().filter(|x| prev.contains(x)).count();
                    assert!(repeated <= overlap.min(max / 2), "{max} {overlap}: {repeated}");
                    assert!(mine[0].0 > prev[0].0);
                }
                previous = Some(mine);
            }
            assert!(covered.iter().all(|c| *c), "{max} {overlap}: a piece is in no chunk");
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, PROSE.len());
        }
    }

    #[test]
    fn chunks_end_between_words_and_repeat_the_configured_overlap() {
        let got = chunks(PROSE, 20, 5);
        for (i, c) in got.iter().enumerate() {
            // Each chunk is the exact text, starting and ending at a word's edge.
            assert!(PROSE.contains(c));
            let at = PROSE.find(c).unwrap();
            let end = at + c.len();
            if i > 0 {
                assert!(PROSE[..at].ends_with(char::is_whitespace), "{c:?} starts inside a word");
            }
            if i + 1 < got.len() {
                assert!(PROSE[end..].starts_with(char::is_whitespace), "{c:?} ends inside a word");
            }
        }
        // With an overlap the next chunk starts with words the previous one ends with.
        let (a, b) = (got[0], got[1]);
        let first_word = b.split_whitespace().next().unwrap();
        assert!(a.split_whitespace().any(|w| w == first_word), "{a:?} / {b:?}");
        // Without, the chunks follow each other, and all words are there, in order.
        let plain = chunks(PROSE, 20, 0);
        let words: Vec<&str> = plain.iter().flat_map(|c| c.split_whitespace()).collect();
        assert_eq!(words, PROSE.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn a_run_without_whitespace_is_cut_at_a_word_piece_boundary() {
        // 400 characters without whitespace: 100 pieces; no word boundary to prefer.
        let text = format!("start {} end", "abcd".repeat(100));
        let p = pieces(&text);
        let ranges = cut(&text, &p, 16, 4);
        for r in &ranges {
            assert!(inside(&p, r).len() <= 16);
            // On piece boundaries: the range's ends are pieces' ends.
            assert!(r.start == 0 || p.iter().any(|x| x.0 == r.start), "{r:?}");
            assert!(r.end == text.len() || p.iter().any(|x| x.1 == r.end), "{r:?}");
        }
        let words: String = chunks(&text, 16, 0).concat();
        assert_eq!(words.replace(' ', ""), text.replace(' ', ""));
    }

    #[test]
    fn without_whitespace_a_cut_falls_at_punctuation_not_inside_a_word() {
        // Words of two pieces ("abcd" + "##efgh") joined by dots: no whitespace at all.
        let text = format!("x {}", "abcdefgh.".repeat(60));
        let p = pieces(&text);
        for (max, overlap) in [(16, 4), (9, 0), (25, 12)] {
            let ranges = cut(&text, &p, max, overlap);
            assert!(ranges.len() > 3);
            for r in &ranges {
                assert!(inside(&p, r).len() <= max);
                let (before, after) = (&text[..r.end], &text[r.end..]);
                assert!(
                    after.is_empty() || before.ends_with('.') || after.starts_with('.'),
                    "{r:?}"
                );
                let (before, after) = (&text[..r.start], &text[r.start..]);
                let ok =
                    before.is_empty() || before.ends_with(['.', ' ']) || after.starts_with('.');
                assert!(ok, "{max} {overlap}: {r:?} starts inside a word");
            }
        }
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let text = "Naïve café-owners in Zürich said: «ça va», 東京 は 大きい. ".repeat(20);
        for (max, overlap) in [(9, 2), (13, 0), (25, 12)] {
            for c in chunks(&text, max, overlap) {
                assert!(text.contains(c));
                assert!(!c.is_empty());
            }
        }
    }

    #[test]
    fn pieces_outside_the_text_or_inside_a_character_are_refused() {
        assert!(check("abc", &[(0, 1), (1, 3)]).is_ok());
        assert!(check("abc", &[(0, 4)]).is_err());
        assert!(check("abc", &[(2, 1)]).is_err());
        assert!(check("é", &[(0, 1)]).is_err());
        assert!(check("abc", &[(1, 2), (0, 1)]).is_err());
    }
}
