//! "Did you mean …?" suggestions by edit distance (optimal string
//! alignment, so a swapped pair of letters counts as one edit).

/// Edit distance between `a` and `b`, counting insertions, deletions,
/// substitutions and adjacent transpositions as one edit each.
pub(crate) fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    // rows[i * width + j] = distance between a[..i] and b[..j]
    let mut rows = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        rows[i * width] = i;
    }
    for (j, cell) in rows.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[(i - 1) * width + j] + 1)
                .min(rows[i * width + j - 1] + 1)
                .min(rows[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[(i - 2) * width + j - 2] + 1);
            }
            rows[i * width + j] = d;
        }
    }
    rows[a.len() * width + b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely
/// typo. A case-insensitive or `_`/`-` spelling match always wins.
pub(crate) fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let normalise = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let norm_word = normalise(word);
    let limit = (word.chars().count() + 1) / 3;
    let limit = limit.max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for cand in candidates {
        if cand == word {
            continue;
        }
        let norm_cand = normalise(cand);
        let (short, long) =
            if norm_word.len() <= norm_cand.len() { (&norm_word, &norm_cand) } else { (&norm_cand, &norm_word) };
        let d = if norm_cand == norm_word {
            0
        } else if short.len() >= 3 && long.starts_with(short.as_str()) {
            // `sig` for `signal`, `mem` for `memory`
            1
        } else {
            osa_distance(&norm_word, &norm_cand)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// `, did you mean `x`?` or nothing.
pub(crate) fn suggestion_suffix<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    match did_you_mean(word, candidates) {
        Some(s) => format!(", did you mean `{s}`?"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(osa_distance("", ""), 0);
        assert_eq!(osa_distance("abc", ""), 3);
        assert_eq!(osa_distance("wbe", "web"), 1);
        assert_eq!(osa_distance("replica", "replicas"), 1);
        assert_eq!(osa_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let fields = ["run", "replicas", "workdir", "env"];
        assert_eq!(did_you_mean("replica", fields), Some("replicas"));
        assert_eq!(did_you_mean("Replicas", fields), Some("replicas"));
        assert_eq!(did_you_mean("zzz", fields), None);
        assert_eq!(did_you_mean("sig", ["signal", "grace"]), Some("signal"));
        assert_eq!(did_you_mean("work", fields), Some("workdir"));
        assert_eq!(did_you_mean("wbe", ["web", "db"]), Some("web"));
        assert_eq!(did_you_mean("on_failure", ["always", "on-failure"]), Some("on-failure"));
    }
}
