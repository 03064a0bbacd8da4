//! Properties of both finders together, on any input: no panic on random
//! or hostile text and HTML, and bounded output and work on huge bodies.

use std::collections::HashSet;

use crate::url::valid_url;
use crate::{MAX_LINKS, codes, links};

/// Random text made of the characters the scanners care about: never a
/// panic, whatever comes out.
#[test]
fn random_input_never_panics() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces = [
        "https://",
        "http://",
        "www.",
        "<a href=\"",
        "<a href='",
        "\">",
        "</a>",
        "<style>",
        "</style",
        "<!--",
        "-->",
        "<",
        ">",
        "&amp;",
        "&#",
        "&#x",
        ";",
        "=",
        "\"",
        "'",
        "@",
        "code",
        "验证码",
        "код",
        "order",
        "#",
        "+",
        "$",
        "€",
        ".",
        ",",
        "-",
        " ",
        "\r\n",
        "\n",
        "(",
        ")",
        "[",
        "]",
        "123",
        "4567",
        "2024",
        "A1",
        "x",
        "é",
        "\u{200B}",
        "。",
        "：",
        "one",
        "time",
        "promo",
    ];
    for _ in 0..3_000 {
        let mut s = String::new();
        for _ in 0..(rand() % 40) {
            s.push_str(pieces[(rand() % pieces.len() as u64) as usize]);
        }
        let l = links(Some(&s), Some(&s));
        assert!(l.iter().all(|u| valid_url(u)), "{s:?}: {l:?}");
        let c = codes(Some(&s), Some(&s), Some(&s));
        let unique: HashSet<&String> = c.iter().collect();
        assert_eq!(unique.len(), c.len(), "{s:?}: {c:?}");
    }
}

#[test]
fn hostile_html_does_not_break_the_scanner() {
    for html in [
        "<",
        "<a href=",
        "<a href=\"https://a.test/",
        "<!--",
        "<style>",
        "<head><p>https://a.test/</p>",
        "</",
        "<<<>>>",
        "&#xFFFFFFFF; &#0; &#99999999999; &",
        "<a href='https://a.test/'",
    ] {
        let _ = links(Some(html), Some(html));
        let _ = codes(Some(html), Some(html), Some(html));
    }
    assert_eq!(
        links(None, Some("<head><p>https://a.test/</p>")),
        ["https://a.test/"]
    );
}

#[test]
fn huge_bodies_are_bounded() {
    // 200 000 distinct links: only MAX_LINKS come back.
    let mut text = String::new();
    for i in 0..200_000 {
        text.push_str(&format!("https://x.test/{i} "));
    }
    let l = links(Some(&text), Some(&text));
    assert_eq!(l.len(), MAX_LINKS);
    assert_eq!(l[0], "https://x.test/0");
    // One giant line of digits and keywords: linear, and bounded.
    let body = "code 123456 ".repeat(200_000);
    let c = codes(None, Some(&body), Some(&body));
    assert_eq!(c, ["123456"]);
    // A huge run of ')' after a URL and of unclosed tags.
    let parens = format!("https://x.test/{}", ")".repeat(100_000));
    assert_eq!(links(Some(&parens), None), ["https://x.test/"]);
    let tags = "<a <a <a <style <head ".repeat(50_000);
    let _ = links(None, Some(&tags));
}
