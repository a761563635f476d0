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
    _t: PhantomData<fn() -> T>,
}

impl<T> Basic<T> {
    /// A namespaced kind with DNS-subdomain names and no spec generation.
    pub fn namespaced() -> Self {
        Basic {
            namespaced: true,
            rule: NameRule::Subdomain,
            generation: false,
            _t: PhantomData,
        }
    }
    /// A cluster-scoped kind with DNS-subdomain names and no spec generation.
    pub fn cluster() -> Self {
        Basic {
            namespaced: false,
            rule: NameRule::Subdomain,
            generation: false,
            _t: PhantomData,
        }
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
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<T>(obj, self.namespaced, self.rule, |_| Vec::new())
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<T>(new, old, |_, _| Vec::new())
    }
    fn tracks_generation(&self) -> bool {
        self.generation
    }
}
