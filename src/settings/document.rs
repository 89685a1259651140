//! The "AWS ECR" integration document (`PLUGIN_INTEGRATION_DOCUMENT`): a JSON document with `ci`, `read`
//! and `setup` blocks, as platforms that manage ECR integrations centrally store them.
//!
//! It is validated against the JSON Schema shipped in `schemas/aws-ecr-integration.schema.json`, read
//! here at build time (one source of truth: the same file `tests/document.rs` checks the README examples
//! against, with an independent validator). The schema uses a small part of JSON Schema (objects,
//! `properties`, `required`, `additionalProperties: false`, strings with `enum`, `pattern`, `minLength`,
//! `const`, and `$ref` to `#/definitions`), which [`validate`] interprets; messages name the JSON path, say
//! what is allowed and, for an unknown property, the closest known one. Values are never echoed when they
//! are secrets (or look like one).
//!
//! The mapping onto settings is in [`FIELDS`]; `Parser::document` below applies it (settings given
//! explicitly win).

use super::Parser;
use super::table::{Key, Mode};
use crate::domain::grammar::printable;
use crate::domain::registry::Registry;
use regex_lite::Regex;
use serde_json::Value;
use std::path::Path;

/// The schema, as shipped.
pub const SCHEMA: &str = include_str!("../../schemas/aws-ecr-integration.schema.json");

/// The largest document the step reads.
pub const LIMIT: usize = 64 * 1024;

/// A document value and the setting it stands for, in groups that are taken whole: when any setting of a
/// group is given explicitly, none of the group comes from the document (a key pair, or a role chain and
/// its external IDs, is never half one and half the other).
pub const FIELDS: &[&[(&str, Key)]] = &[
    &[("ci.access_key", Key::AccessKey), ("ci.secret_key", Key::SecretKey)],
    &[
        ("setup.role_arn", Key::RoleArn),
        ("setup.external_id", Key::ExternalId),
        ("setup.intermediate_role", Key::IntermediateRole),
        ("setup.intermediate_external_id", Key::IntermediateExternalId),
    ],
    &[("setup.policy", Key::RepositoryPolicy)],
    &[("read.role_arn", Key::ReadRoleArn)],
    &[("read.region", Key::ReadRegion)],
];

/// Paths whose values are secrets: never shown.
const SECRET_PATHS: &[&str] = &["ci.secret_key", "setup.external_id", "setup.intermediate_external_id"];

/// Parse and validate a document; its string values by JSON path (`setup.role_arn`), or every problem.
pub fn read(text: &str) -> Result<Vec<(String, String)>, Vec<String>> {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the shipped schema is JSON");
    let document: Value = serde_json::from_str(text)
        .map_err(|e| vec![format!("not valid JSON ({e}): give the document as JSON text")])?;
    let problems = validate(&document, &schema, &schema, "");
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut values = Vec::new();
    flatten(&document, "", &mut values);
    Ok(values)
}

fn flatten(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(v, &join(path, k), out);
            }
        }
        Value::String(s) => out.push((path.to_string(), s.clone())),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn shown(path: &str, value: &str) -> String {
    if SECRET_PATHS.contains(&path) {
        "<secret>".to_string()
    } else {
        format!("`{}`", printable(value))
    }
}

/// Every way `value` at `path` breaks `schema` (a part of `root`), as messages naming the path.
pub fn validate(value: &Value, schema: &Value, root: &Value, path: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/definitions/")
            .expect("the schema refers to its definitions");
        return validate(value, &root["definitions"][name], root, path);
    }
    let at = if path.is_empty() {
        "the document".to_string()
    } else {
        path.to_string()
    };
    let mut problems = Vec::new();
    if let Some(constant) = schema.get("const") {
        if value != constant {
            problems.push(format!("{at}: expected {constant}"));
        }
        return problems;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let Some(map) = value.as_object() else {
                return vec![format!("{at}: expected an object ({{ … }}), not {}", kind(value))];
            };
            let properties = schema["properties"].as_object().cloned().unwrap_or_default();
            for required in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    problems.push(format!("{}: required, and missing", join(path, required)));
                }
            }
            for (key, child) in map {
                match properties.get(key) {
                    Some(child_schema) => problems.extend(validate(child, child_schema, root, &join(path, key))),
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        let closest = properties
                            .keys()
                            .map(|k| (strsim::jaro_winkler(key, k), k))
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                            .filter(|(score, _)| *score > 0.7)
                            .map(|(_, k)| format!("; did you mean {}?", join(path, k)))
                            .unwrap_or_else(|| {
                                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                                format!(" (known: {})", known.join(", "))
                            });
                        problems.push(format!("{}: unknown property{closest}", join(path, &printable(key))));
                    }
                    None => {}
                }
            }
        }
        Some("string") => {
            let Some(text) = value.as_str() else {
                return vec![format!("{at}: expected a string, not {}", kind(value))];
            };
            if let Some(allowed) = schema["enum"].as_array()
                && !allowed.iter().any(|a| a == value)
            {
                let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
                problems.push(format!(
                    "{at}={} is not allowed: expected one of {}",
                    shown(path, text),
                    names.join(", ")
                ));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                let re = Regex::new(pattern).expect("the schema's patterns are valid");
                if !re.is_match(text) {
                    problems.push(format!(
                        "{at}={} is not allowed: expected a string matching {pattern}",
                        shown(path, text)
                    ));
                }
            }
            if let Some(min) = schema["minLength"].as_u64()
                && (text.chars().count() as u64) < min
            {
                problems.push(format!("{at}: expected at least {min} character(s)"));
            }
        }
        _ => {}
    }
    problems
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Parser {
    /// `PLUGIN_INTEGRATION_DOCUMENT`: validated against the schema, then each group of its values fills the
    /// settings it stands for, unless one of them was given explicitly (explicit settings win, group by
    /// group) or it does not apply in this mode. The regions: `ci.region` and `setup.region` must agree
    /// (the step pushes to one region) unless `PLUGIN_REGION` chooses, and are not used when every
    /// `PLUGIN_REGISTRY` host is an ECR host, which names its region.
    pub(super) fn document(&mut self, mode: Mode) {
        let Some(value) = self.values.remove(&Key::IntegrationDocument) else {
            return;
        };
        let text = if value.starts_with('{') {
            value
        } else {
            match crate::files::read_bounded(Path::new(&value), LIMIT) {
                Ok(text) => text,
                Err(e) => {
                    self.problems.push(format!("PLUGIN_INTEGRATION_DOCUMENT: {e}"));
                    return;
                }
            }
        };
        let values = match read(&text) {
            Ok(values) => values,
            Err(problems) => {
                let named = problems
                    .into_iter()
                    .map(|p| format!("PLUGIN_INTEGRATION_DOCUMENT: {p}"));
                self.problems.extend(named);
                return;
            }
        };
        let get = |path: &str| values.iter().find(|(p, _)| p == path).map(|(_, v)| v.clone());
        for group in FIELDS {
            let explicit = group.iter().find(|(_, key)| self.values.contains_key(key));
            for (path, key) in group.iter() {
                let Some(value) = get(path) else { continue };
                let line = match explicit {
                    Some((_, given)) => format!(
                        "{}: from the setting {} (document {path} not used)",
                        key.env(),
                        given.env()
                    ),
                    None if !key.setting().applies_in(mode) => {
                        format!("{}: document {path} not used with PLUGIN_MODE={mode}", key.env())
                    }
                    None => {
                        self.values.insert(*key, value);
                        self.from_document.insert(*key, path.to_string());
                        format!("{}: from document {path}", key.env())
                    }
                };
                self.origins.push(line);
            }
        }
        let (ci, setup) = (get("ci.region"), get("setup.region"));
        let registries_name_the_region = self.values.get(&Key::Registry).is_some_and(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .all(|h| Registry::parse(h).is_ok_and(|r| r.ecr.is_some()))
        });
        let explicit = self.values.contains_key(&Key::Region);
        if explicit {
            self.origins
                .push("PLUGIN_REGION: from the setting (document ci.region, setup.region not used)".into());
        } else if registries_name_the_region {
            self.origins
                .push("PLUGIN_REGION: from the PLUGIN_REGISTRY hosts (document regions not used)".into());
        } else if ci != setup {
            self.problems.push(format!(
                "PLUGIN_INTEGRATION_DOCUMENT: ci.region ({}) and setup.region ({}) disagree, and the step pushes to \
                 one region: make them agree, or choose one with PLUGIN_REGION",
                ci.unwrap_or_default(),
                setup.unwrap_or_default()
            ));
        } else if let Some(region) = setup {
            self.values.insert(Key::Region, region);
            self.from_document.insert(Key::Region, "ci.region, setup.region".into());
            self.origins
                .push("PLUGIN_REGION: from document ci.region, setup.region".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn example() -> Value {
        serde_json::json!({
            "ci": {"region": "eu-west-1", "access_key": "AKIAIOSFODNN7EXAMPLE", "secret_key": SECRET},
            "read": {"region": "us-east-1", "role_arn": "arn:aws:iam::111111111111:role/central-read"},
            "setup": {
                "region": "eu-west-1",
                "role_arn": "arn:aws:iam::222222222222:role/builds",
                "external_id": "ext-42",
                "intermediate_role": "arn:aws:iam::333333333333:role/hop",
                "intermediate_external_id": "ext-hop",
                "policy": "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
            },
            "repository_provider": "aws-ecr"
        })
    }

    fn problems(document: &Value) -> String {
        read(&document.to_string()).unwrap_err().join("\n")
    }

    #[test]
    fn a_whole_document_gives_every_value_by_path() {
        let values = read(&example().to_string()).unwrap();
        let get = |p: &str| values.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str());
        assert_eq!(get("setup.role_arn"), Some("arn:aws:iam::222222222222:role/builds"));
        assert_eq!(get("ci.secret_key"), Some(SECRET));
        assert_eq!(get("read.region"), Some("us-east-1"));
        // Every mapped path is a property of the schema.
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        for (path, _) in FIELDS.iter().flat_map(|g| g.iter()) {
            let (block, name) = path.split_once('.').unwrap();
            assert!(schema["properties"][block]["properties"][name].is_object(), "{path}");
        }
    }

    #[test]
    fn every_property_malformed_missing_or_unknown_is_named_by_its_path() {
        type Break = fn(&mut Value);
        let cases: Vec<(Break, &str)> = vec![
            (
                |d| d["ci"]["region"] = "eu-west-9".into(),
                "ci.region=`eu-west-9` is not allowed: expected one of us-east-1",
            ),
            (
                |d| d["ci"]["access_key"] = "akia".into(),
                "ci.access_key=`akia` is not allowed: expected a string matching",
            ),
            (
                |d| d["ci"]["secret_key"] = "".into(),
                "ci.secret_key: expected at least 1 character",
            ),
            (
                |d| d["ci"]["secret_key"] = 5.into(),
                "ci.secret_key: expected a string, not a number",
            ),
            (
                |d| d["read"]["role_arn"] = "arn:aws:iam::1:role/x".into(),
                "read.role_arn=",
            ),
            (|d| d["read"]["region"] = "mars-1".into(), "read.region="),
            (
                |d| d["setup"]["role_arn"] = "role".into(),
                "setup.role_arn=`role` is not allowed",
            ),
            (
                |d| d["setup"]["intermediate_role"] = "x".into(),
                "setup.intermediate_role=",
            ),
            (
                |d| d["setup"]["external_id"] = true.into(),
                "setup.external_id: expected a string, not a boolean",
            ),
            (
                |d| d["setup"]["policy"] = serde_json::json!({}),
                "setup.policy: expected a string, not an object",
            ),
            (
                |d| d["repository_provider"] = "gcr".into(),
                "repository_provider: expected \"aws-ecr\"",
            ),
            (|d| d["ci"] = serde_json::json!([]), "ci: expected an object"),
            (
                |d| {
                    d.as_object_mut().unwrap().remove("ci");
                },
                "ci: required, and missing",
            ),
            (
                |d| {
                    d.as_object_mut().unwrap().remove("setup");
                },
                "setup: required, and missing",
            ),
            (
                |d| {
                    d["ci"].as_object_mut().unwrap().remove("secret_key");
                },
                "ci.secret_key: required, and missing",
            ),
            (
                |d| {
                    d["ci"].as_object_mut().unwrap().remove("region");
                },
                "ci.region: required, and missing",
            ),
            (
                |d| {
                    d["setup"].as_object_mut().unwrap().remove("role_arn");
                },
                "setup.role_arn: required, and missing",
            ),
            (
                |d| d["setup"]["rol_arn"] = "x".into(),
                "setup.rol_arn: unknown property; did you mean setup.role_arn?",
            ),
            (
                |d| d["ci"]["acess_key"] = "x".into(),
                "ci.acess_key: unknown property; did you mean ci.access_key?",
            ),
            (|d| d["read"]["zzz"] = "x".into(), "read.zzz: unknown property (known: "),
            (
                |d| d["setupp"] = serde_json::json!({}),
                "setupp: unknown property; did you mean setup?",
            ),
        ];
        for (break_it, want) in cases {
            let mut d = example();
            break_it(&mut d);
            let e = problems(&d);
            assert!(e.contains(want), "want `{want}` in:\n{e}");
            assert!(!e.contains(SECRET), "the secret leaked: {e}");
        }
        let e = read("{").unwrap_err().join("");
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn secret_values_are_never_shown_even_when_refused() {
        let mut d = example();
        d["setup"]["external_id"] = 7.into();
        d["ci"]["region"] = SECRET.into();
        let e = problems(&d);
        assert!(!e.contains(SECRET), "{e}");
    }
}
