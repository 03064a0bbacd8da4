//! The links of a mail: the URLs of the text part, then those of the HTML
//! part (`href` targets and URLs in the visible text, merged by position),
//! without duplicates and at most [`MAX_LINKS`].

use std::collections::HashSet;

use crate::MAX_LINKS;
use crate::html::render_html;
use crate::url::scan_urls;

/// The `http://` and `https://` links of a mail whose decoded text part is
/// `text` and HTML part `html`: those of the text first, then the HTML's
/// `href` targets and the URLs of its visible text, in order of appearance;
/// without duplicates, at most [`MAX_LINKS`]. Pass `text: None` when the
/// text is only a rendering of the HTML. The rules are in the crate
/// documentation.
pub fn links(text: Option<&str>, html: Option<&str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut push = |url: String, out: &mut Vec<String>| {
        if out.len() < MAX_LINKS && seen.insert(url.clone()) {
            out.push(url);
        }
        out.len() < MAX_LINKS
    };
    if let Some(text) = text {
        scan_urls(text, true, |_, url| push(url, &mut out));
    }
    if let Some(html) = html
        && out.len() < MAX_LINKS
    {
        let rendered = render_html(html, true);
        // URLs of the visible text; the text is already entity-decoded.
        let mut visible = Vec::new();
        let mut unique = HashSet::new();
        scan_urls(&rendered.text, false, |at, url| {
            if unique.insert(url.clone()) {
                visible.push((at, url));
            }
            visible.len() < MAX_LINKS
        });
        // Merge by position; an href comes before the anchor's own text.
        let mut hrefs = rendered.hrefs.into_iter().peekable();
        let mut visible = visible.into_iter().peekable();
        loop {
            let take_href = match (hrefs.peek(), visible.peek()) {
                (Some((h, _)), Some((v, _))) => h <= v,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_href {
                hrefs.next()
            } else {
                visible.next()
            };
            if let Some((_, url)) = next
                && !push(url, &mut out)
            {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rules() {
        let l = |text: &str| links(Some(text), None);
        assert_eq!(
            l("See https://a.test/x_(y)). And (https://b.test/z)."),
            ["https://a.test/x_(y)", "https://b.test/z"]
        );
        assert_eq!(
            l("<https://a.test/>, \"https://b.test/q?a=1&amp;b=2\"; 'https://c.test'!"),
            [
                "https://a.test/",
                "https://b.test/q?a=1&b=2",
                "https://c.test"
            ]
        );
        assert_eq!(
            l("ftp://a.test mailto:x@y.test http:// https:///x HTTPS://UP.test/A"),
            ["HTTPS://UP.test/A"]
        );
        assert_eq!(
            l("dup https://a.test/1 https://a.test/1 https://a.test/2"),
            ["https://a.test/1", "https://a.test/2"]
        );
        assert_eq!(
            l("请访问https://a.test/帮助。 [https://b.test/]"),
            ["https://a.test/", "https://b.test/"]
        );
        assert_eq!(
            l("https://a.test/?x=&#61;&#x3D;&lt;"),
            ["https://a.test/?x==="]
        );
    }

    #[test]
    fn html_link_rules() {
        let html = r#"<!-- https://comment.test/ --><a href = "https://a.test/1?x=1&amp;y=2" >one</a>
<A HREF='https://b.test/2'>two</A> <a href=https://c.test/3>three</a>
<img src="https://img.test/p.gif"><script>var u="https://script.test/";</script>
<a href="mailto:x@y.test">mail</a> <a href="/relative">rel</a>
<p>Text link https://d.test/4&amp;z=1, and <a href="https://e.test/5">https://e.test/5</a></p>
<a href="&#104;ttps://f.test/6">obfuscated</a> <a href=" https://g.test/7 ">spaces</a>"#;
        assert_eq!(
            links(None, Some(html)),
            [
                "https://a.test/1?x=1&y=2",
                "https://b.test/2",
                "https://c.test/3",
                "https://d.test/4&z=1",
                "https://e.test/5",
                "https://f.test/6",
                "https://g.test/7",
            ]
        );
    }

    /// What a hand-written finder does that `linkify` (weighed when this
    /// crate was split off) does not: a typographic quote, an ellipsis or
    /// a zero-width space ends a URL, a non-ASCII path does not (only CJK
    /// text does), an IPv6 literal is a host, and a host starting with `-`
    /// is none.
    #[test]
    fn link_rules_beyond_ascii() {
        let l = |text: &str| links(Some(text), None);
        assert_eq!(
            l("«https://a.test/x» “https://b.test/y” https://c.test/z…"),
            ["https://a.test/x", "https://b.test/y", "https://c.test/z"]
        );
        assert_eq!(
            l("https://ru.test/wiki/Почта https://a.test/\u{200B}x"),
            ["https://ru.test/wiki/Почта", "https://a.test/"]
        );
        assert_eq!(
            l("https://user@a.test/ http://[::1]:8080/x http://-bad.test/"),
            ["https://user@a.test/", "http://[::1]:8080/x"]
        );
    }
}
