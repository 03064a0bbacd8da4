//! `Mail::links` and `Mail::codes` on whole messages as they arrive:
//! charsets (windows-1251, ISO-8859-1), quoted-printable soft breaks inside
//! a URL, base64 bodies, multipart/alternative, HTML-only mail, in several
//! languages. The finders' own rules are unit-tested in
//! crates/emap-extract; these tests prove that emap hands them the decoded
//! parts.
#![cfg(feature = "extract")]

use emap::Mail;

/// A message with `\n` line ends in the source and CRLF on the wire.
fn eml(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn parse(raw: Vec<u8>) -> Mail {
    Mail::parse(1, 1, "INBOX", None, raw, false)
}

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    links: &'static [&'static str],
    first_code: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let mut cp1251 = eml("\
From: =?windows-1251?B?0eXw4ujx?= <noreply@service.ru>
To: task@x.test
Subject: =?windows-1251?B?yu7kIO/u5PLi5fDm5OXt6P8=?=
Content-Type: text/plain; charset=windows-1251
Content-Transfer-Encoding: 8bit

");
    // "Ваш код подтверждения: 482913\r\nНикому не сообщайте его.\r\n"
    cp1251.extend_from_slice(
            b"\xc2\xe0\xf8 \xea\xee\xe4 \xef\xee\xe4\xf2\xe2\xe5\xf0\xe6\xe4\xe5\xed\xe8\xff: 482913\r\n\
              \xcd\xe8\xea\xee\xec\xf3 \xed\xe5 \xf1\xee\xee\xe1\xf9\xe0\xe9\xf2\xe5 \xe5\xe3\xee.\r\n",
        );
    let mut latin1 = eml("\
From: Service <noreply@service.fr>
To: task@x.test
Subject: =?ISO-8859-1?Q?V=E9rifiez_votre_adresse?=
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: 8bit

");
    // "Votre code de vérification est : 730215\r\nValable 10 minutes.\r\n"
    latin1.extend_from_slice(
        b"Votre code de v\xe9rification est : 730215\r\nValable 10 minutes.\r\n",
    );
    vec![
        Case {
            name: "plain text",
            raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: Verify your email address
Date: Mon, 01 Jan 2024 12:00:00 +0200
Content-Type: text/plain; charset=utf-8

Hello,

Your verification code is 482913. It expires in 10 minutes.
Or open https://service.test/verify?token=abc123&user=42.

(c) 2024 Service Inc., 1600 Example Street, +1 555 123 4567
"),
            links: &["https://service.test/verify?token=abc123&user=42"],
            first_code: Some("482913"),
        },
        Case {
            name: "HTML only, styled code in a td, button with &amp;",
            raw: eml(r##"From: Service <noreply@service.test>
To: task@x.test
Subject: Confirm your account
Content-Type: text/html; charset=utf-8

<html><head><title>Code 111111</title><style>.c{color:#123456;width:600px}</style>
<link rel="stylesheet" href="https://cdn.service.test/mail.css"></head>
<body style="background:#f4f4f4"><table width="600" cellpadding="0"><tr><td>
<img src="https://cdn.service.test/logo.png" width="120" height="40" alt="Service">
</td></tr><tr><td style="font-family:Arial;font-size:16px">Your verification code</td></tr>
<tr><td style="font-size:32px;letter-spacing:6px;color:#1a73e8"><b>551122</b></td></tr>
<tr><td><a href="https://service.test/verify?t=9f8e&amp;uid=77&amp;lang=en" style="color:#ffffff">Verify email</a></td></tr>
<tr><td>&copy; 2024 Service &middot; <a href='https://service.test/help'>Help</a></td></tr>
</table></body></html>
"##),
            links: &[
                "https://service.test/verify?t=9f8e&uid=77&lang=en",
                "https://service.test/help",
            ],
            first_code: Some("551122"),
        },
        Case {
            name: "quoted-printable: soft breaks inside a URL, =3D",
            raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: Sign in to Service
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Your one-time passcode: 906 114

Sign in: https://login.service.test/magic?session=3Dab12cd34ef56&redirect=
=3Dhttps%3A%2F%2Fservice.test%2Fhome&sig=3D0f9e8d7c6b5a
"),
            links: &[
                "https://login.service.test/magic?session=ab12cd34ef56&redirect=https%3A%2F%2Fservice.test%2Fhome&sig=0f9e8d7c6b5a",
            ],
            first_code: Some("906114"),
        },
        Case {
            name: "base64 body",
            raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: Security code
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

WW91ciBzZWN1cml0eSBjb2RlOiA0MjQyNDIKVmlzaXQgaHR0cHM6Ly9zZXJ2aWNlLnRlc3QvYWNj
b3VudCB0byBtYW5hZ2UgeW91ciBzZXR0aW5ncy4K
"),
            links: &["https://service.test/account"],
            first_code: Some("424242"),
        },
        Case {
            name: "ISO-8859-1 French",
            raw: latin1,
            links: &[],
            first_code: Some("730215"),
        },
        Case {
            name: "windows-1251 Russian",
            raw: cp1251,
            links: &[],
            first_code: Some("482913"),
        },
        Case {
            name: "multipart/alternative",
            raw: eml(r#"From: Service <noreply@service.test>
To: task@x.test
Subject: Your login code
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8

Use code 7H3K9Q to sign in (https://service.test/login).
Order 55512345 shipped.
--alt
Content-Type: text/html; charset=utf-8

<p>Use code <strong>7H3K9Q</strong> to sign in.</p>
<p><a href="https://service.test/login">Sign in</a> &middot; <a href="https://service.test/unsubscribe?u=1&amp;l=2">Unsubscribe</a></p>
--alt--
"#),
            links: &[
                "https://service.test/login",
                "https://service.test/unsubscribe?u=1&l=2",
            ],
            first_code: Some("7H3K9Q"),
        },
        Case {
            name: "German",
            raw: eml("\
From: Dienst <noreply@dienst.test>
To: task@x.test
Subject: =?UTF-8?Q?Best=C3=A4tigen_Sie_Ihre_E-Mail-Adresse?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hallo,

Sie haben sich am 12.05.2024 um 10:30 Uhr registriert.
Ihr Bestätigungscode lautet: 318204
Bestellnummer: 12345678, Betrag: 49,99 €

Oder klicken Sie hier: <https://dienst.test/bestaetigen?c=318204>.
"),
            links: &["https://dienst.test/bestaetigen?c=318204"],
            first_code: Some("318204"),
        },
        Case {
            name: "Chinese",
            raw: eml("\
From: =?UTF-8?B?5pyN5Yqh?= <noreply@service.cn>
To: task@x.test
Subject: =?UTF-8?B?6aqM6K+B56CB?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

您的验证码是：６０２９１７，10分钟内有效。请勿泄露。
订单号：20240512001，客服电话：400-123-4567
详情请访问https://service.cn/help。
"),
            links: &["https://service.cn/help"],
            first_code: Some("602917"),
        },
        Case {
            name: "Japanese",
            raw: eml("\
From: noreply@service.jp
To: task@x.test
Subject: =?UTF-8?B?44CQ44K144O844OT44K544CR6KqN6Ki844Kz44O844OJ?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

認証コード：538201
2024年5月12日 10:30
"),
            links: &[],
            first_code: Some("538201"),
        },
        Case {
            name: "order number and phone number, no code",
            raw: eml("\
From: Shop <orders@shop.test>
To: task@x.test
Subject: Your order #1234567 has shipped
Content-Type: text/plain; charset=utf-8

Thank you for your order!

Order number: 123456
Order date: 2024-05-12 14:30
Total: $1,299.00 (USD 1299)
Questions? Call us at (555) 123-4567 or +1 800 555 0199.
Customer ID 987654.
Track it at https://shop.test/track/1Z999AA10123456784.
"),
            links: &["https://shop.test/track/1Z999AA10123456784"],
            first_code: None,
        },
        Case {
            name: "magic link only",
            raw: eml(r#"From: App <login@app.test>
To: task@x.test
Subject: Sign in to App
Content-Type: text/html; charset=utf-8

<p>Click the button below to sign in. This link expires in 15 minutes.</p>
<p><a href="https://app.test/auth/magic?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&amp;next=%2Fdashboard">Sign in</a></p>
<p>If the button does not work, paste this link: https://app.test/auth/magic?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&amp;next=%2Fdashboard</p>
"#),
            links: &[
                "https://app.test/auth/magic?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln&next=%2Fdashboard",
            ],
            first_code: None,
        },
        Case {
            name: "code in the subject only, keyword after",
            raw: eml("\
From: Service <noreply@service.test>
To: task@x.test
Subject: 271828 is your Service code
Content-Type: text/plain; charset=utf-8

Welcome back! Questions: see https://service.test/faq (FAQ).
"),
            links: &["https://service.test/faq"],
            first_code: Some("271828"),
        },
        Case {
            name: "Spanish, Portuguese and Italian wording, code on the next line",
            raw: eml("\
From: Servicio <noreply@servicio.test>
To: task@x.test
Subject: =?UTF-8?Q?C=C3=B3digo_de_verificaci=C3=B3n?=
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Tu código de verificación es:

  640 118

Código postal 28013. Seu código: 640118. Il tuo codice: 640118.
"),
            links: &[],
            first_code: Some("640118"),
        },
    ]
}

#[test]
fn realistic_verification_mails() {
    let cases = cases();
    assert!(cases.len() >= 14);
    for case in cases {
        let m = parse(case.raw);
        assert_eq!(m.links(), case.links, "{}: links", case.name);
        assert_eq!(
            m.codes().first().map(String::as_str),
            case.first_code,
            "{}: codes {:?}",
            case.name,
            m.codes()
        );
    }
}

#[test]
fn no_code_mail_has_no_codes_at_all() {
    let case = cases()
        .into_iter()
        .find(|c| c.name.starts_with("order number"))
        .unwrap();
    let m = parse(case.raw);
    assert_eq!(m.codes(), Vec::<String>::new());
}

/// An HTML-only mail, minified as generators emit it (no whitespace between
/// tags). `Mail::text` is mail-parser's rendering of the HTML, which glues
/// the cells together ("Verification code482913"); the finders must see the
/// HTML once, through their own layout-aware rendering, not that text too.
#[test]
fn html_only_mail_is_scanned_once_with_its_layout() {
    let m = parse(eml(r#"From: Service <noreply@service.test>
To: task@x.test
Subject: Verify your email
Content-Type: text/html; charset=utf-8

<table><tr><td>Verification code</td><td><b>482913</b></td></tr></table>
<div>Your code</div><div>551122</div>
<p><a href="https://service.test/verify?t=1">Verify</a> or paste https://service.test/help</p>
"#));
    // The premise: mail-parser's rendering glues cells and blocks.
    assert!(
        m.text()
            .unwrap()
            .starts_with("Verification code482913 Your code551122 ")
    );
    assert_eq!(m.codes(), ["482913", "551122"]);
    // In order of appearance: the href comes before the pasted URL.
    assert_eq!(
        m.links(),
        [
            "https://service.test/verify?t=1",
            "https://service.test/help"
        ]
    );
}
