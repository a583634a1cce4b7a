//! Bearer-token authentication: the admin (generated at start, not subject to
//! RBAC) and the configured users.

use std::collections::HashMap;

use rand::Rng;

use crate::config::UserConfig;

/// The name of the admin user.
pub const ADMIN: &str = "kube-sim-admin";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The admin may do anything; everyone else is checked by RBAC.
    pub admin: bool,
}

/// The tokens kube-sim accepts.
pub struct Tokens {
    users: HashMap<String, User>,
    admin_token: String,
}

impl Tokens {
    /// A fresh admin token plus the configured users.
    pub fn new(users: &[UserConfig]) -> Tokens {
        let admin_token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let mut map: HashMap<String, User> = users
            .iter()
            .filter(|u| !u.token.is_empty())
            .map(|u| {
                let user = User {
                    name: u.name.clone(),
                    admin: false,
                };
                (u.token.clone(), user)
            })
            .collect();
        map.insert(
            admin_token.clone(),
            User {
                name: ADMIN.to_owned(),
                admin: true,
            },
        );
        Tokens {
            users: map,
            admin_token,
        }
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The user of an `Authorization` header value, if it carries a known token.
    pub fn authenticate(&self, header: Option<&str>) -> Option<&User> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        self.users.get(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tokens_only() {
        let tokens = Tokens::new(&[UserConfig {
            name: "alice".into(),
            token: "t-alice".into(),
        }]);
        let admin = format!("Bearer {}", tokens.admin_token());
        assert!(tokens.authenticate(Some(&admin)).is_some_and(|u| u.admin));
        let alice = tokens.authenticate(Some("Bearer t-alice")).expect("alice");
        assert_eq!(alice.name, "alice");
        assert!(!alice.admin);
        assert!(tokens.authenticate(Some("Bearer nope")).is_none());
        assert!(tokens.authenticate(Some("t-alice")).is_none());
        assert!(tokens.authenticate(None).is_none());
    }
}
