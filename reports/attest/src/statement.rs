//! in-toto Statement v1 and the test-result predicate v0.1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::AttestError;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const TEST_RESULT_PREDICATE: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// An in-toto ResourceDescriptor (the fields zooaudit uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
}

impl ResourceDescriptor {
    pub fn sha256(name: &str, uri: &str, sha256: &str) -> Self {
        ResourceDescriptor {
            name: name.to_string(),
            uri: uri.to_string(),
            digest: BTreeMap::from([("sha256".to_string(), sha256.to_string())]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

impl Statement {
    pub fn new(
        subject: Vec<ResourceDescriptor>,
        predicate_type: &str,
        predicate: serde_json::Value,
    ) -> Self {
        Statement {
            statement_type: STATEMENT_TYPE.to_string(),
            subject,
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }

    /// Parses a (verified) payload and checks the statement type and subjects.
    pub fn from_payload(payload: &[u8]) -> Result<Statement, AttestError> {
        let s: Statement = serde_json::from_slice(payload).map_err(|e| {
            AttestError::Invalid(format!("payload is not an in-toto Statement: {e}"))
        })?;
        if s.statement_type != STATEMENT_TYPE {
            return Err(AttestError::Invalid(format!(
                "statement _type is {:?}, expected {STATEMENT_TYPE:?}",
                s.statement_type
            )));
        }
        if s.subject.is_empty() {
            return Err(AttestError::Invalid("statement has no subject".into()));
        }
        for (i, sub) in s.subject.iter().enumerate() {
            if sub.digest.is_empty() {
                return Err(AttestError::Invalid(format!("subject {i} has no digest")));
            }
        }
        Ok(s)
    }

    /// The subject whose sha256 is `sha256`, if any.
    pub fn subject_with_sha256(&self, sha256: &str) -> Option<&ResourceDescriptor> {
        self.subject.iter().find(|s| {
            s.digest
                .get("sha256")
                .is_some_and(|d| d.eq_ignore_ascii_case(sha256))
        })
    }
}

/// `https://in-toto.io/attestation/test-result/v0.1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// `PASSED`, `WARNED` or `FAILED`.
    pub result: String,
    pub configuration: Vec<ResourceDescriptor>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub passed_tests: Vec<String>,
    pub warned_tests: Vec<String>,
    pub failed_tests: Vec<String>,
}
