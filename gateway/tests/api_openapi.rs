//! docs/openapi.yaml documents exactly the routes of the route table, with
//! the same access rule, and the whole problem catalogue.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use bashu_gateway::api::{Access, ROUTES};
use bashu_gateway::problem::CATALOGUE;
use std::collections::BTreeMap;

fn openapi() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap()
}

/// `path → method → x-bashu-access` from the `paths:` section. The file is
/// written in a fixed two-space layout, which this reader relies on.
fn documented(yaml: &str) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    let mut in_paths = false;
    let (mut path, mut method) = (None::<String>, None::<String>);
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        match indent {
            2 if text.ends_with(':') => {
                path = Some(text.trim_end_matches(':').to_owned());
                method = None;
            }
            4 if text.ends_with(':') => {
                let m = text.trim_end_matches(':').to_owned();
                out.entry(path.clone().unwrap())
                    .or_default()
                    .insert(m.clone(), None);
                method = Some(m);
            }
            6 => {
                if let (Some(p), Some(m), Some(access)) =
                    (&path, &method, text.strip_prefix("x-bashu-access: "))
                {
                    out.get_mut(p).unwrap().insert(m.clone(), Some(access.to_owned()));
                }
            }
            _ => {}
        }
    }
    out
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::OwnCreditBank => "own-credit-bank",
        Access::PeerGateway => "peer-gateway",
        Access::OwnOperator => "own-operator",
        Access::Authenticated => "authenticated",
    }
}

#[test]
fn every_route_is_documented_with_its_access_rule_and_nothing_else() {
    let docs = documented(&openapi());
    for route in ROUTES {
        let method = route.method.as_str().to_ascii_lowercase();
        let access = docs
            .get(route.path)
            .and_then(|m| m.get(&method))
            .unwrap_or_else(|| panic!("{} {} missing from docs/openapi.yaml", route.method, route.path));
        assert_eq!(
            access.as_deref(),
            Some(access_name(route.access)),
            "{} {}",
            route.method,
            route.path
        );
    }
    let n_documented: usize = docs.values().map(BTreeMap::len).sum();
    assert_eq!(
        n_documented,
        ROUTES.len(),
        "docs/openapi.yaml has routes the router lacks: {docs:?}"
    );
}

#[test]
fn every_problem_type_is_in_the_schema_enum() {
    let yaml = openapi();
    for row in CATALOGUE {
        let line = format!("        - urn:bashu:problem:{}\n", row.slug);
        assert!(yaml.contains(&line), "{} missing from ProblemType", row.slug);
    }
}
