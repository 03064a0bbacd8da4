//! Which characters belong to the CJK scripts. The URL finder and the code
//! finder must agree on it: such text runs into a URL without a space (so a
//! URL ends there), and a keyword such as "验证码" sits inside a run of it
//! (so keywords are looked for within the run, not as whole words).

/// CJK ideographs, kana, Hangul, CJK punctuation and full-width forms:
/// text in these scripts runs into a URL without a space.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(
        c as u32,
        0x3000..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF
            | 0xFF00..=0xFFEF
    )
}
