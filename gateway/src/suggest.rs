//! "Did you mean …?": the nearest of a set of valid names by edit
//! distance, for error messages that list what is valid (`bashu map`'s
//! levels and outcome types, unknown `BASHU_*` environment variables).

/// Levenshtein distance in Unicode scalar values (so a Chinese label one
/// character off is distance 1, not 3 bytes).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate nearest to `input` (ties: the first), compared after
/// trimming surrounding whitespace, if it is within `max_distance`.
pub fn nearest<'a, I>(input: &str, candidates: I, max_distance: usize) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let input = input.trim();
    candidates
        .into_iter()
        .map(|c| (edit_distance(input, c), c))
        .filter(|(d, _)| *d <= max_distance)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("listn", "listen"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("学分课程", "学历教育"), 3);
        assert_eq!(edit_distance("职业技能", "职业技能等级"), 2);
    }

    #[test]
    fn nearest_trims_and_respects_the_limit() {
        let names = ["BASHU_LISTEN_API", "BASHU_DATA_DIR"];
        assert_eq!(nearest("BASHU_LISTN_API", names, 3), Some("BASHU_LISTEN_API"));
        assert_eq!(
            nearest("职业技能等级 ", ["学历教育", "职业技能等级"], 0),
            Some("职业技能等级")
        );
        assert_eq!(nearest("ZZZZ", names, 3), None);
    }
}
