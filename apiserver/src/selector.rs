//! Label and field selectors, as upstream `k8s.io/apimachinery/pkg/labels` and
//! `k8s.io/apimachinery/pkg/fields`: the same grammar, the same matching and the same error
//! wording (clients show these messages verbatim).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::validation::{is_qualified_name, is_valid_label_value, FieldError};

// ---------------------------------------------------------------------------------------------
// Label selectors

/// A label requirement operator (upstream `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `a=b`
    Equals,
    /// `a==b`
    DoubleEquals,
    /// `a!=b`
    NotEquals,
    /// `a in (x,y)`
    In,
    /// `a notin (x,y)`
    NotIn,
    /// `a`
    Exists,
    /// `!a`
    DoesNotExist,
    /// `a>1`
    GreaterThan,
    /// `a<1`
    LessThan,
}

/// One term of a label selector: key, operator and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// The values as given (the parser hands them over sorted and deduplicated).
    pub values: Vec<String>,
}

/// Go's `%#v` of a `[]string`, as upstream prints a bad values set.
fn go_string_slice(vals: &[String]) -> String {
    if vals.is_empty() {
        return "[]string(nil)".to_string();
    }
    let quoted: Vec<String> = vals.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Upstream `utilerrors.NewAggregate(...).Error()`: one message alone, several in brackets.
fn aggregate(msgs: Vec<String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for m in msgs {
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.len() == 1 {
        seen.pop().unwrap_or_default()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

fn label_key_error(key: &str, path: &str) -> Option<String> {
    let errs = is_qualified_name(key);
    if errs.is_empty() {
        None
    } else {
        Some(FieldError::invalid(path, key, errs.join("; ")).to_string())
    }
}

impl Requirement {
    /// Upstream `labels.NewRequirement`: validates the key, the values count for the operator
    /// and each value; the error is the upstream aggregate message.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        Self::new_at(key, operator, values, "")
    }

    /// `path` is the parent field path (`""` = none, as in `labels.Parse`).
    fn new_at(
        key: &str,
        operator: Operator,
        values: Vec<String>,
        path: &str,
    ) -> Result<Self, String> {
        let child = |c: &str| {
            if path.is_empty() {
                c.to_string()
            } else {
                format!("{path}.{c}")
            }
        };
        let values_path = child("values");
        let mut errs = Vec::new();
        if let Some(e) = label_key_error(key, &child("key")) {
            errs.push(e);
        }
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(
                        FieldError::invalid_raw(
                            &values_path,
                            go_string_slice(&values),
                            "for 'in', 'notin' operators, values set can't be empty",
                        )
                        .to_string(),
                    );
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(
                        FieldError::invalid_raw(
                            &values_path,
                            go_string_slice(&values),
                            "exact-match compatibility requires one single value",
                        )
                        .to_string(),
                    );
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(
                        FieldError::invalid_raw(
                            &values_path,
                            go_string_slice(&values),
                            "values set must be empty for exists and does not exist",
                        )
                        .to_string(),
                    );
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(
                        FieldError::invalid_raw(
                            &values_path,
                            go_string_slice(&values),
                            "for 'Gt', 'Lt' operators, exactly one value is required",
                        )
                        .to_string(),
                    );
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(
                            FieldError::invalid(
                                format!("{values_path}[{i}]"),
                                v,
                                "for 'Gt', 'Lt' operators, the value must be an integer",
                            )
                            .to_string(),
                        );
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let verrs = is_valid_label_value(v);
            if !verrs.is_empty() {
                errs.push(
                    FieldError::invalid(format!("{values_path}[{i}][{key}]"), v, verrs.join("; "))
                        .to_string(),
                );
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(aggregate(errs))
        }
    }

    /// Upstream `Requirement.Matches` over a label lookup.
    pub fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                get(&self.key).is_some_and(has)
            }
            Operator::NotIn | Operator::NotEquals => get(&self.key).is_none_or(|v| !has(v)),
            Operator::Exists => get(&self.key).is_some(),
            Operator::DoesNotExist => get(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(label) = get(&self.key).and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [value] = self.values.as_slice() else {
                    return false;
                };
                let Ok(value) = value.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    label > value
                } else {
                    label < value
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Upstream `Requirement.String()`: `!a`, `a`, `a=b`, `a in (x,y)` (values sorted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut vals: Vec<&str> = self.values.iter().map(String::as_str).collect();
        vals.sort_unstable();
        f.write_str(&vals.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: requirements ANDed together. The empty selector matches
/// everything; [`LabelSelector::nothing`] (a null `metav1.LabelSelector`) matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Upstream `labels.Lexer`, byte-wise (a NUL byte ends the input, as upstream).
fn lex(s: &str) -> Vec<(Token, String)> {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let text = |from: usize, to: usize| {
        String::from_utf8_lossy(b.get(from..to).unwrap_or_default()).into_owned()
    };
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while is_whitespace(at(pos)) {
            pos += 1;
        }
        let c = at(pos);
        if c == 0 {
            out.push((Token::EndOfString, String::new()));
            return out;
        }
        let start = pos;
        if is_special_symbol(c) {
            // Longest run of special symbols that still forms a token.
            let mut last: Option<(Token, usize)> = None;
            while is_special_symbol(at(pos)) {
                pos += 1;
                match keyword(&text(start, pos)) {
                    Some(t) => last = Some((t, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((t, end)) => {
                    pos = end;
                    out.push((t, text(start, end)));
                }
                None => out.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", text(start, pos)),
                )),
            }
        } else {
            while at(pos) != 0 && !is_special_symbol(at(pos)) && !is_whitespace(at(pos)) {
                pos += 1;
            }
            let lit = text(start, pos);
            out.push((keyword(&lit).unwrap_or(Token::Identifier), lit));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// Upstream `labels.Parser`.
struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn item(&self, i: usize, ctx: Context) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(i)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        match tok {
            Token::In | Token::NotIn if ctx == Context::Values => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }
    fn lookahead(&self, ctx: Context) -> (Token, String) {
        self.item(self.position, ctx)
    }
    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let it = self.item(self.position, ctx);
        self.position += 1;
        it
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return Requirement::new_at(&key, op, Vec::new(), "");
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new_at(&key, op, values, "")
    }

    /// Returns the key and `Exists`/`DoesNotExist` when the operator is already known.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        // Upstream validates with a nil field path here, hence `<nil>` in the message.
        if let Some(e) = label_key_error(&lit, "<nil>") {
            return Err(e);
        }
        let (t, _) = self.lookahead(Context::Values);
        if (t == Token::EndOfString || t == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (t, _) = self.consume(Context::Values);
                if t != Token::ClosedPar {
                    // Upstream reports the token seen before the list, not the offending one.
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A sorted, deduplicated set, as upstream `sets.String.List()`.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s = std::collections::BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    s.insert(lit);
                    let (t2, l2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s.into_iter().collect()),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.insert(String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        s.insert(String::new());
                        return Ok(s.into_iter().collect());
                    }
                    if t2 == Token::Comma {
                        self.consume(Context::Values);
                        s.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

fn label_str(v: &Value) -> Option<&str> {
    v.as_str()
}

impl LabelSelector {
    /// Upstream `labels.Parse`: `a=b,c!=d,e in (x,y),!f,g`. The empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            items: lex(s),
            position: 0,
        };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// The selector that matches no object (a null `metav1.LabelSelector`).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// True when the selector matches everything (upstream `Selector.Empty()`).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for [`LabelSelector::nothing`].
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Matches labels as they appear in `metadata.labels` (non-string values count as absent).
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.nothing
            && self
                .requirements
                .iter()
                .all(|r| r.matches(|k| labels.get(k).and_then(label_str)))
    }

    /// Matches a plain label map.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing
            && self
                .requirements
                .iter()
                .all(|r| r.matches(|k| labels.get(k).map(String::as_str)))
    }

    /// Matches an object's `metadata.labels` (an object without labels has none).
    pub fn matches_object(&self, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.matches(labels)
    }

    /// Upstream `metav1.LabelSelectorAsSelector`: a `metav1.LabelSelector` object
    /// (`matchLabels` + `matchExpressions` In/NotIn/Exists/DoesNotExist). `null` selects
    /// nothing; `{}` selects everything.
    pub fn from_label_selector_json(v: &Value) -> Result<Self, String> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            other => return Err(format!("label selector must be an object, not {other}")),
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, val) in m {
                    let Some(val) = val.as_str() else {
                        return Err(format!("matchLabels[{k}] must be a string"));
                    };
                    requirements.push(Requirement::new(
                        k,
                        Operator::Equals,
                        vec![val.to_string()],
                    )?);
                }
            }
            Some(_) => return Err("matchLabels must be an object".to_string()),
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for e in exprs {
                    let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                    let op_str = e
                        .get("operator")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let op = match op_str {
                        "In" => Operator::In,
                        "NotIn" => Operator::NotIn,
                        "Exists" => Operator::Exists,
                        "DoesNotExist" => Operator::DoesNotExist,
                        other => {
                            return Err(format!("{other:?} is not a valid label selector operator"))
                        }
                    };
                    let values = match e.get("values") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(a)) => a
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .map(str::to_string)
                                    .ok_or_else(|| "values must be strings".to_string())
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                        Some(_) => return Err("values must be an array".to_string()),
                    };
                    requirements.push(Requirement::new(key, op, values)?);
                }
            }
            Some(_) => return Err("matchExpressions must be an array".to_string()),
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Upstream `labels.SelectorFromValidatedSet` for a plain `{key: value}` map (Service
    /// and ReplicationController selectors). `null` or `{}` selects everything.
    pub fn from_set_json(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(Self::everything()),
            Value::Object(m) => {
                let mut requirements = Vec::new();
                for (k, val) in m {
                    let Some(val) = val.as_str() else {
                        return Err(format!("selector[{k}] must be a string"));
                    };
                    requirements.push(Requirement::new(
                        k,
                        Operator::Equals,
                        vec![val.to_string()],
                    )?);
                }
                requirements.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(LabelSelector {
                    requirements,
                    nothing: false,
                })
            }
            other => Err(format!("selector must be an object, not {other}")),
        }
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream `Selector.String()`: requirements joined with `,` (what `/scale` reports).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors

/// A field requirement operator. Upstream folds `==` into `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Equals,
    NotEquals,
}

/// One term of a field selector, with its value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

/// A parsed field selector: terms ANDed together; empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// Upstream `fields.EscapeValue`.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `fields.UnescapeValue`.
fn unescape_field_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream prints the rune with %v, i.e. as a number.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

/// Upstream `splitTerms`: split on commas not preceded by a backslash escape.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Upstream `splitTerm`: the first position where `!=`, `==` or `=` starts.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, len, kind) in [
            ("!=", 2, FieldOp::NotEquals),
            ("==", 2, FieldOp::Equals),
            ("=", 1, FieldOp::Equals),
        ] {
            if rest.starts_with(op) {
                return Some((&term[..i], kind, &rest[len..]));
            }
        }
    }
    None
}

impl FieldSelector {
    /// Upstream `fields.ParseSelector`: `a=b`, `a==b`, `a!=b`, comma-joined, values escaped
    /// with `\` (`\,`, `\=`, `\\`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let value = unescape_field_value(rhs)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The terms, in upstream order (sorted by their text).
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches an object whose field values `get` returns; a missing field is the empty string.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = get(&r.field).unwrap_or_default();
            match r.op {
                FieldOp::Equals => v == r.value,
                FieldOp::NotEquals => v != r.value,
            }
        })
    }

    /// Upstream `RequiresExactMatch`: the value of the first `field=value` term for `field`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }

    /// Rejects fields the resource cannot select on, as upstream field label conversion does
    /// (`field label not supported: spec.foo`). `metadata.name` and `metadata.namespace` are
    /// always supported; `supported` lists the resource's others.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), String> {
        for r in &self.requirements {
            let f = r.field.as_str();
            if f != "metadata.name" && f != "metadata.namespace" && !supported.contains(&f) {
                return Err(format!("field label not supported: {f}"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for FieldSelector {
    /// Upstream `Selector.String()`: `a=b,c!=d` with values escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            write!(f, "{}{}{}", r.field, op, escape_field_value(&r.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY_REGEX_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_REGEX_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn label_parse_and_string() {
        // (input, canonical String())
        let cases = [
            ("", ""),
            ("a=b", "a=b"),
            ("a==b", "a==b"),
            ("a!=b", "a!=b"),
            ("a", "a"),
            ("!a", "!a"),
            (" ! a ", "!a"),
            ("a in (y,x)", "a in (x,y)"),
            ("a in (x, y, x)", "a in (x,y)"),
            ("a notin (x)", "a notin (x)"),
            ("a in ()", "a in ()"),
            ("a in (,)", "a in ()"),
            ("a in (x,)", "a in (,x)"),
            ("a=", "a="),
            ("a>1", "a>1"),
            ("a<5", "a<5"),
            ("z=1,a=2", "a=2,z=1"),
            ("x=a,y!=b, z in (c) ,!w", "!w,x=a,y!=b,z in (c)"),
            ("example.com/app=web", "example.com/app=web"),
            ("a=in", "a=in"),
            ("in=x", "in=x"),
            ("a in (in,notin)", "a in (in,notin)"),
            ("\ta=b\n", "a=b"),
        ];
        for (input, want) in cases {
            let sel = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn label_parse_errors() {
        let cases = [
            ("a=b,", "found '', expected: identifier after ','"),
            (",a", "found ',', expected: !, identifier, or 'end of string'"),
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("a=b=c", "found '=', expected: ',' or 'end of string'"),
            ("a in x", "unable to parse requirement: found 'x' expected: '('"),
            ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
            ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
            ("a in", "unable to parse requirement: found '' expected: '('"),
            ("a (", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("a>b", "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"),
            ("a<", "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer"),
        ];
        for (input, want) in cases {
            assert_eq!(
                LabelSelector::parse(input).err().as_deref(),
                Some(want),
                "{input:?}"
            );
        }
    }

    #[test]
    fn label_validation_errors() {
        let key = LabelSelector::parse("a$=b").err().unwrap_or_default();
        assert_eq!(
            key,
            format!("unable to parse requirement: <nil>: Invalid value: \"a$\": {KEY_REGEX_MSG}")
        );
        let value = LabelSelector::parse("a=b$").err().unwrap_or_default();
        assert_eq!(value, format!("unable to parse requirement: values[0][a]: Invalid value: \"b$\": {VALUE_REGEX_MSG}"));
        let long = "x".repeat(64);
        let err = LabelSelector::parse(&format!("a={long}"))
            .err()
            .unwrap_or_default();
        assert!(err.contains("must be no more than 63 characters"), "{err}");
        let err = LabelSelector::parse("a/b/c").err().unwrap_or_default();
        assert!(
            err.starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name"
            ),
            "{err}"
        );
        let err = LabelSelector::parse("a in (-,b$)")
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("unable to parse requirement: [values[0][a]: Invalid value: \"-\""),
            "{err}"
        );
        assert!(
            err.contains(", values[1][a]: Invalid value: \"b$\""),
            "{err}"
        );
    }

    #[test]
    fn label_matches() {
        let labels = json!({"app": "web", "tier": "fe", "n": "3", "weird": 5});
        let labels = labels.as_object().cloned().unwrap_or_default();
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("missing=x", false),
            ("app in (db,web)", true),
            ("app notin (db,web)", false),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=fe", true),
            ("app=web,tier=be", false),
            ("n>2", true),
            ("n>3", false),
            ("n<4", true),
            ("app>1", false),
            ("missing>1", false),
            ("missing<1", false),
            ("weird", false),
            ("tier=", false),
            ("missing in ()", false),
        ];
        let btree: BTreeMap<String, String> = labels
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect();
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(s.matches(&labels), want, "{sel:?}");
            assert_eq!(s.matches_labels(&btree), want, "{sel:?} (btree)");
        }
        let obj = json!({"metadata": {"name": "x"}});
        assert!(LabelSelector::parse("!app").is_ok_and(|s| s.matches_object(&obj)));
        assert!(LabelSelector::parse("app").is_ok_and(|s| !s.matches_object(&obj)));
    }

    #[test]
    fn label_empty_and_nothing() {
        assert!(LabelSelector::parse("").is_ok_and(|s| s.is_empty()));
        assert!(LabelSelector::parse("a").is_ok_and(|s| !s.is_empty()));
        let nothing = LabelSelector::nothing();
        assert!(!nothing.is_empty() && nothing.is_nothing());
        assert!(!nothing.matches(&Map::new()));
        assert!(LabelSelector::everything().matches(&Map::new()));
    }

    #[test]
    fn label_selector_json() {
        let ok = [
            (json!(null), None),
            (json!({}), Some("")),
            (
                json!({"matchLabels": {"b": "2", "a": "1"}}),
                Some("a=1,b=2"),
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                    {"key": "env", "operator": "NotIn", "values": ["prod"]},
                    {"key": "x", "operator": "Exists"},
                    {"key": "y", "operator": "DoesNotExist", "values": []},
                ]}),
                Some("app=web,env notin (prod),tier in (be,fe),x,!y"),
            ),
        ];
        for (v, want) in ok {
            let s =
                LabelSelector::from_label_selector_json(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
            match want {
                None => assert!(s.is_nothing(), "{v}"),
                Some(w) => assert_eq!(s.to_string(), w, "{v}"),
            }
        }
        let errs = [
            (json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}), "\"Gt\" is not a valid label selector operator"),
            (json!({"matchExpressions": [{"key": "a", "operator": "In"}]}), "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"),
            (json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}), "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"),
            (json!({"matchLabels": {"a": "b$"}}), "values[0][a]: Invalid value: \"b$\""),
            (json!({"matchLabels": {"a": 1}}), "matchLabels[a] must be a string"),
            (json!("a=b"), "label selector must be an object"),
        ];
        for (v, want) in errs {
            let e = LabelSelector::from_label_selector_json(&v)
                .err()
                .unwrap_or_default();
            assert!(e.starts_with(want), "{v}: {e}");
        }
        let s = LabelSelector::from_label_selector_json(
            &json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}),
        );
        let labels = json!({"tier": "fe"});
        assert!(s.is_ok_and(|s| labels.as_object().is_some_and(|l| s.matches(l))));
    }

    #[test]
    fn label_set_json() {
        assert!(LabelSelector::from_set_json(&json!(null)).is_ok_and(|s| s.is_empty()));
        assert_eq!(
            LabelSelector::from_set_json(&json!({"b": "2", "a": "1"})).map(|s| s.to_string()),
            Ok("a=1,b=2".to_string())
        );
        assert!(LabelSelector::from_set_json(&json!([])).is_err());
    }

    #[test]
    fn field_parse() {
        type Reqs = &'static [(&'static str, FieldOp, &'static str)];
        // (input, requirements as (field, op, value), String())
        let cases: &[(&str, Reqs, &str)] = &[
            ("", &[], ""),
            (
                "metadata.name=x",
                &[("metadata.name", FieldOp::Equals, "x")],
                "metadata.name=x",
            ),
            (
                "metadata.name==x",
                &[("metadata.name", FieldOp::Equals, "x")],
                "metadata.name=x",
            ),
            (
                "spec.nodeName!=",
                &[("spec.nodeName", FieldOp::NotEquals, "")],
                "spec.nodeName!=",
            ),
            (
                "status.phase=Running,metadata.name=a",
                &[
                    ("metadata.name", FieldOp::Equals, "a"),
                    ("status.phase", FieldOp::Equals, "Running"),
                ],
                "metadata.name=a,status.phase=Running",
            ),
            ("a=x\\,y", &[("a", FieldOp::Equals, "x,y")], "a=x\\,y"),
            (
                "a=x\\=y\\\\",
                &[("a", FieldOp::Equals, "x=y\\")],
                "a=x\\=y\\\\",
            ),
            ("a=b,", &[("a", FieldOp::Equals, "b")], "a=b"),
            ("=b", &[("", FieldOp::Equals, "b")], "=b"),
            ("a!=b!", &[("a", FieldOp::NotEquals, "b!")], "a!=b!"),
        ];
        for (input, reqs, string) in cases {
            let s = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let got: Vec<(&str, FieldOp, &str)> = s
                .requirements()
                .iter()
                .map(|r| (r.field.as_str(), r.op, r.value.as_str()))
                .collect();
            assert_eq!(got.as_slice(), *reqs, "{input:?}");
            assert_eq!(s.to_string(), *string, "{input:?}");
            assert_eq!(s.is_empty(), reqs.is_empty());
        }
    }

    #[test]
    fn field_parse_errors() {
        let cases = [
            ("abc", "invalid selector: 'abc'; can't understand 'abc'"),
            ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                "a=\\x",
                "invalid field selector: invalid escape sequence: \\x",
            ),
            (
                "a=b\\",
                "invalid field selector: invalid escape sequence: \\",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                FieldSelector::parse(input).err().as_deref(),
                Some(want),
                "{input:?}"
            );
        }
    }

    #[test]
    fn field_matches() {
        let get = |f: &str| match f {
            "metadata.name" => Some("web".to_string()),
            "spec.nodeName" => Some(String::new()),
            _ => None,
        };
        let cases = [
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name=db", false),
            ("metadata.name!=db", true),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("status.phase=", true),
            ("status.phase=Running", false),
            ("status.phase!=Running", true),
            ("metadata.name=web,spec.nodeName!=n1", true),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
            assert_eq!(s.matches(get), want, "{sel:?}");
        }
    }

    #[test]
    fn field_supported_and_exact() {
        let cases = [
            ("metadata.name=a,metadata.namespace=b", Ok(())),
            ("spec.nodeName=n", Ok(())),
            (
                "spec.foo=x",
                Err("field label not supported: spec.foo".to_string()),
            ),
            (
                "metadata.uid=x",
                Err("field label not supported: metadata.uid".to_string()),
            ),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap_or_default();
            assert_eq!(s.check_supported(&["spec.nodeName"]), want, "{sel:?}");
        }
        let s = FieldSelector::parse("metadata.name!=a,metadata.name=b").unwrap_or_default();
        assert_eq!(s.requires_exact_match("metadata.name"), Some("b"));
        assert_eq!(s.requires_exact_match("spec.x"), None);
        assert_eq!(escape_field_value("a,b=c\\"), "a\\,b\\=c\\\\");
    }
}
