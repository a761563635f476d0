//! The strategy of kinds that need only ObjectMeta validation and a typed decode.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{FieldErrors, NameRule};

/// ObjectMeta checks plus a decode into `T`; nothing kind-specific.
pub struct Basic<T> {
    namespaced: bool,
    rule: NameRule,
    generation: bool,
    defaults: Option<fn(&mut Value)>,
    on_create: Option<fn(&mut Value)>,
    check: Option<fn(&Value) -> FieldErrors>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Basic<T> {
    /// A namespaced kind with DNS-subdomain names and no spec generation.
    pub fn namespaced() -> Self {
        Self::new(true)
    }
    /// A cluster-scoped kind with DNS-subdomain names and no spec generation.
    pub fn cluster() -> Self {
        Self::new(false)
    }
    fn new(namespaced: bool) -> Self {
        Basic {
            namespaced,
            rule: NameRule::Subdomain,
            generation: false,
            defaults: None,
            on_create: None,
            check: None,
            _t: PhantomData,
        }
    }
    /// Adds defaulting (runs on create and update).
    pub fn with_defaults(mut self, f: fn(&mut Value)) -> Self {
        self.defaults = Some(f);
        self
    }
    /// Adds a create-time preparation (e.g. an initial status).
    pub fn with_on_create(mut self, f: fn(&mut Value)) -> Self {
        self.on_create = Some(f);
        self
    }
    /// Adds kind-specific checks on the JSON object.
    pub fn with_check(mut self, f: fn(&Value) -> FieldErrors) -> Self {
        self.check = Some(f);
        self
    }
    /// Overrides the name rule.
    pub fn with_rule(mut self, rule: NameRule) -> Self {
        self.rule = rule;
        self
    }
    /// Marks the kind as having a spec whose changes bump `metadata.generation`.
    pub fn with_generation(mut self) -> Self {
        self.generation = true;
        self
    }
}

impl<T: DeserializeOwned + 'static> Strategy for Basic<T> {
    fn default(&self, obj: &mut Value) {
        if let Some(f) = self.defaults {
            f(obj);
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(f) = self.on_create {
            f(obj);
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<T>(obj, self.namespaced, self.rule, |_| {
            self.check.map(|f| f(obj)).unwrap_or_default()
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<T>(new, old, |_, _| {
            self.check.map(|f| f(new)).unwrap_or_default()
        })
    }
    fn tracks_generation(&self) -> bool {
        self.generation
    }
}
