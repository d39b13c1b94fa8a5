//! The fixture learner records, embedded so the quickstart and tests work
//! from any directory.

/// One fixture credential subject and the member whose credit bank issues it.
#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    pub member: &'static str,
    pub name: &'static str,
    pub subject_json: &'static str,
}

macro_rules! fixture {
    ($member:literal, $name:literal) => {
        Fixture {
            member: $member,
            name: $name,
            subject_json: include_str!(concat!(
                "../../../fixtures/records/",
                $member,
                "/",
                $name,
                ".json"
            )),
        }
    };
}

/// Every fixture record, by issuing member.
pub const FIXTURES: &[Fixture] = &[
    fixture!("cq", "degree-course"),
    fixture!("cq", "vocational-skill"),
    fixture!("cq", "micro-credential"),
    fixture!("cq", "community-course"),
    fixture!("sc", "degree-course"),
    fixture!("sc", "vocational-qualification"),
    fixture!("sc", "community-course"),
];

impl Fixture {
    /// The subject as JSON; the fixtures are checked by a test to parse.
    pub fn subject(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.subject_json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_parses_and_belongs_to_its_member() {
        for f in FIXTURES {
            let subject = f.subject().unwrap();
            let learner = subject["id"].as_str().unwrap();
            assert!(
                learner.starts_with(&format!("urn:bashu:learner:{}:", f.member)),
                "{}",
                f.name
            );
        }
    }
}
