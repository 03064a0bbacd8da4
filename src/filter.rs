//! STUB (replaced by the mail helper).
#![allow(missing_docs, dead_code)]
use crate::Mail;
use std::time::SystemTime;
#[derive(Debug, Clone, Default)]
pub struct Filter {
    to: Option<String>,
}
impl Filter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn to(mut self, a: impl Into<String>) -> Self {
        self.to = Some(a.into().to_lowercase());
        self
    }
    pub fn recipient(&self) -> Option<&str> {
        self.to.as_deref()
    }
    pub fn matches(&self, _m: &Mail, _now: SystemTime) -> bool {
        true
    }
    pub fn validate(&self) -> Result<(), crate::Error> {
        Ok(())
    }
    pub fn earliest(&self, _now: SystemTime) -> Option<SystemTime> {
        None
    }
}
