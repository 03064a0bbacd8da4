//! How results leave the benchmark: one [`Row`] per measured line, printed
//! as an aligned table per scenario (human) or as one JSON object per line
//! (`--json`, for scripts and the CI smoke test). No serde: the values are
//! numbers and short strings, escaped here.

use std::fmt::Write as _;

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    /// Not measured (e.g. a server count on a server we cannot ask).
    Null,
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => {
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else if f.abs() >= 10.0 {
                    format!("{f:.1}")
                } else {
                    format!("{f:.2}")
                }
            }
            Value::Str(s) => s.clone(),
            Value::Null => "-".into(),
        }
    }

    fn json(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => format!("{f}"),
            Value::Float(_) | Value::Null => "null".into(),
            Value::Str(s) => json_string(s),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result line of a scenario: ordered (column, value) pairs.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub fields: Vec<(String, Value)>,
}

impl Row {
    pub fn new(scenario: &str) -> Row {
        Row {
            scenario: scenario.to_owned(),
            fields: Vec::new(),
        }
    }

    /// Appends a column (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Row {
        self.set(key, value);
        self
    }

    /// Sets a column, replacing an earlier value of the same name.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The row as one JSON object, `scenario` first.
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"scenario\":{}", json_string(&self.scenario));
        for (k, v) in &self.fields {
            let _ = write!(out, ",{}:{}", json_string(k), v.json());
        }
        out.push('}');
        out
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The rows of one scenario as an aligned text table (columns: the union
/// of their keys, in first-seen order).
pub fn table(rows: &[Row]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for r in rows {
        for (k, _) in &r.fields {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(c).map_or_else(|| "-".into(), Value::text))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, items: &[String]| {
        let parts: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:>w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &columns);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for row in &cells {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        let r = Row::new("x")
            .with("a", 1i64)
            .with("b", "q\"\n")
            .with("c", None::<i64>);
        assert_eq!(
            r.to_json(),
            r#"{"scenario":"x","a":1,"b":"q\"\n","c":null}"#
        );
    }
}
