//! The repository settings (push and promote): each applied only when set; mutability with its exclusion
//! filters, encryption and its key, tags and the policies (JSON text or a bounded file).

use super::{Key, Parser, dedup};
use crate::domain::grammar;
use crate::domain::repository::{Encryption, Mutability, RepositorySettings, TagRule};
use std::path::Path;

impl Parser {
    /// The repository settings: each applied only when set.
    pub(super) fn repository(&mut self) -> RepositorySettings {
        let create = self.parse_or_default(Key::CreateRepository, grammar::boolean);
        let mutability = self.parse(Key::TagMutability, Mutability::parse);
        let exclusions = self.list(Key::TagMutabilityExclusions, grammar::exclusion_filter);
        let tag_mutability = match (mutability, exclusions) {
            (Some(m), Some(filters)) if m.with_exclusions() => {
                if filters.len() > 5 {
                    self.problem(format!(
                        "PLUGIN_TAG_MUTABILITY_EXCLUSIONS: {} filters given; ECR takes at most 5",
                        filters.len()
                    ))
                } else {
                    Some(TagRule {
                        mutability: m,
                        exclusions: dedup(filters),
                    })
                }
            }
            (Some(m), None) if m.with_exclusions() => self.problem(format!(
                "PLUGIN_TAG_MUTABILITY={} needs PLUGIN_TAG_MUTABILITY_EXCLUSIONS: the tags to exclude (e.g. latest,sha256-*)",
                m.api_str()
            )),
            (Some(m), Some(_)) => self.problem(format!(
                "PLUGIN_TAG_MUTABILITY_EXCLUSIONS is set but PLUGIN_TAG_MUTABILITY={} has no exclusions: use \
                 IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION, or remove the filters",
                m.api_str()
            )),
            (Some(m), None) => Some(TagRule::plain(m)),
            (None, _) => None,
        };
        let scan_on_push = self.parse(Key::ScanOnPush, grammar::boolean);
        let kind = self.parse(Key::Encryption, |v| match v.to_ascii_uppercase().as_str() {
            "AES256" => Ok(false),
            "KMS" => Ok(true),
            _ => Err("AES256 or KMS".to_string()),
        });
        let kms_key = self.parse(Key::KmsKey, |v| grammar::kms_key(v).map(|_| v.to_string()));
        let encryption = match (kind, kms_key) {
            (Some(true), key) => Some(Encryption::Kms(key)),
            (Some(false), None) => Some(Encryption::Aes256),
            (None, None) => None,
            // Without PLUGIN_ENCRYPTION at all the table's rule already said so.
            (None, Some(_)) => None,
            (Some(false), Some(_)) => {
                self.problem("PLUGIN_KMS_KEY is set without PLUGIN_ENCRYPTION=KMS: set both, or remove the key")
            }
        };
        let tags = self
            .parse(Key::RepositoryTags, grammar::resource_tags)
            .unwrap_or_default();
        let lifecycle_policy = self.parse(Key::LifecyclePolicy, |v| policy(v, 30_720));
        let repository_policy = self.parse(Key::RepositoryPolicy, |v| policy(v, 10_240));
        RepositorySettings {
            create,
            tag_mutability,
            scan_on_push,
            encryption,
            tags,
            lifecycle_policy,
            repository_policy,
        }
    }
}

/// A policy setting: JSON text, or the path of a regular file of at most `max_len` bytes holding it.
pub(super) fn policy(value: &str, max_len: usize) -> Result<String, String> {
    if grammar::is_inline_json(value) {
        return grammar::json_policy(value, max_len);
    }
    let text = crate::files::read_bounded(Path::new(value), max_len)
        .map_err(|e| format!("JSON text, or a path to a readable JSON file ({e})"))?;
    grammar::json_policy(&text, max_len)
}
