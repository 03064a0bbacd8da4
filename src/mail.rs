//! STUB (replaced by the mail helper).
#![allow(missing_docs, dead_code)]
use std::time::SystemTime;
#[derive(Debug, Clone)]
pub struct Address {
    pub name: Option<String>,
    pub email: String,
}
#[derive(Debug, Clone)]
pub struct Mail {
    recipients: Vec<String>,
}
impl Mail {
    pub fn parse(
        _uid: u32,
        _v: u32,
        _m: &str,
        _d: Option<SystemTime>,
        _raw: Vec<u8>,
        _t: bool,
    ) -> Mail {
        Mail { recipients: vec![] }
    }
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }
    pub fn subject(&self) -> Option<&str> {
        None
    }
}
pub(crate) fn parse_internal_date(_s: &str) -> Option<SystemTime> {
    None
}
