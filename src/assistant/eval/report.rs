//! `eval ... --report DIR`: what went wrong, example by example, in files people can act on.
//!
//! For intents: `mistakes.csv` (every wrong prediction with its confidence, the most confident
//! first: those are the examples to look at), `intents.csv` (precision, recall and F1 per
//! intent) and `confusion.html` (the confusion matrix, the per-intent table and the mistakes
//! on one self-contained page), and `languages.csv` (every message whose language was detected
//! wrongly, with the detector's confidence). For retrieval: `queries.csv` (every query's rank of the entry
//! it should find and the entry ranked first instead).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use html_escape::{encode_double_quoted_attribute as attribute, encode_text as text};

/// One test example as the classifier saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentOutcome {
    pub text: String,
    pub language: Option<String>,
    pub expected: String,
    /// `oos` when rejected as out of scope.
    pub predicted: String,
    /// The classifier's probability for its best in-scope intent (below its threshold when
    /// the example was rejected as out of scope).
    pub confidence: f32,
}

/// Precision, recall and F1 of one intent.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentScores {
    pub intent: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Test examples labelled with it.
    pub support: usize,
    /// Test examples predicted as it.
    pub predicted: usize,
}

pub fn intent_scores(outcomes: &[IntentOutcome]) -> Vec<IntentScores> {
    let labels: BTreeSet<&str> = outcomes
        .iter()
        .flat_map(|o| [o.expected.as_str(), o.predicted.as_str()])
        .collect();
    labels
        .into_iter()
        .map(|label| {
            let support = outcomes.iter().filter(|o| o.expected == label).count();
            let predicted = outcomes.iter().filter(|o| o.predicted == label).count();
            let correct = outcomes
                .iter()
                .filter(|o| o.expected == label && o.predicted == label)
                .count();
            let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
            let (precision, recall) = (ratio(correct, predicted), ratio(correct, support));
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            IntentScores {
                intent: label.to_string(),
                precision,
                recall,
                f1,
                support,
                predicted,
            }
        })
        .collect()
}

fn csv_error(error: csv::Error) -> std::io::Error {
    std::io::Error::other(error)
}

/// Write the intents report into `dir` (created if needed); returns the files written.
pub fn write_intents(dir: &Path, outcomes: &[IntentOutcome]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut mistakes: Vec<&IntentOutcome> = outcomes
        .iter()
        .filter(|o| o.expected != o.predicted)
        .collect();
    mistakes.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let mistakes_path = dir.join("mistakes.csv");
    let mut writer = csv::Writer::from_path(&mistakes_path).map_err(csv_error)?;
    writer
        .write_record(["text", "language", "expected", "predicted", "confidence"])
        .map_err(csv_error)?;
    for mistake in &mistakes {
        writer
            .write_record([
                mistake.text.as_str(),
                mistake.language.as_deref().unwrap_or(""),
                &mistake.expected,
                &mistake.predicted,
                &format!("{:.4}", mistake.confidence),
            ])
            .map_err(csv_error)?;
    }
    writer.flush()?;

    let scores = intent_scores(outcomes);
    let intents_path = dir.join("intents.csv");
    let mut writer = csv::Writer::from_path(&intents_path).map_err(csv_error)?;
    writer
        .write_record([
            "intent",
            "precision",
            "recall",
            "f1",
            "support",
            "predicted",
        ])
        .map_err(csv_error)?;
    for score in &scores {
        writer
            .write_record([
                score.intent.clone(),
                format!("{:.4}", score.precision),
                format!("{:.4}", score.recall),
                format!("{:.4}", score.f1),
                score.support.to_string(),
                score.predicted.to_string(),
            ])
            .map_err(csv_error)?;
    }
    writer.flush()?;

    let page_path = dir.join("confusion.html");
    std::fs::write(&page_path, confusion_page(outcomes, &scores, &mistakes))?;
    Ok(vec![mistakes_path, intents_path, page_path])
}

/// The confusion matrix (rows: expected, columns: predicted; a cell's shade is its share of
/// the row), the per-intent table and the mistakes, as one page without outside resources.
fn confusion_page(
    outcomes: &[IntentOutcome],
    scores: &[IntentScores],
    mistakes: &[&IntentOutcome],
) -> String {
    let labels: Vec<&str> = scores.iter().map(|s| s.intent.as_str()).collect();
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for outcome in outcomes {
        *counts
            .entry((outcome.expected.as_str(), outcome.predicted.as_str()))
            .or_default() += 1;
    }
    let correct = outcomes
        .iter()
        .filter(|o| o.expected == o.predicted)
        .count();
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Intent classification report</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}\
         th.row,td.text{text-align:left}\
         #confusion thead th{writing-mode:vertical-rl;transform:rotate(180deg);vertical-align:bottom}\
         td.diagonal{outline:2px solid #2a7}\
         </style></head><body>\n",
    );
    let _ = writeln!(
        page,
        "<h1>Intent classification report</h1><p>{correct} of {} test examples right ({:.1}%). \
         Rows are the expected intent, columns the predicted one; <code>oos</code> is \
         out of scope.</p>",
        outcomes.len(),
        100.0 * correct as f64 / outcomes.len().max(1) as f64
    );
    page.push_str("<h2>Confusion matrix</h2><table id=\"confusion\"><thead><tr><th></th>");
    for label in &labels {
        let _ = write!(page, "<th>{}</th>", text(label));
    }
    page.push_str("</tr></thead><tbody>\n");
    for expected in &labels {
        let row_total: usize = labels
            .iter()
            .map(|predicted| counts.get(&(*expected, *predicted)).copied().unwrap_or(0))
            .sum();
        let _ = write!(page, "<tr><th class=\"row\">{}</th>", text(expected));
        for predicted in &labels {
            let count = counts.get(&(*expected, *predicted)).copied().unwrap_or(0);
            let share = count as f64 / row_total.max(1) as f64;
            let (hue, class) = if expected == predicted {
                (140, " class=\"diagonal\"")
            } else {
                (0, "")
            };
            let title = format!("expected {expected}, predicted {predicted}: {count}");
            let _ = write!(
                page,
                "<td{class} title=\"{}\" style=\"background:hsla({hue},70%,50%,{:.2})\">{}</td>",
                attribute(&title),
                share * 0.8,
                if count == 0 {
                    String::new()
                } else {
                    count.to_string()
                }
            );
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</tbody></table>\n<h2>Per intent</h2><table id=\"intents\"><thead><tr>");
    page.push_str(
        "<th class=\"row\">intent</th><th>precision</th><th>recall</th><th>F1</th>\
         <th>support</th><th>predicted</th></tr></thead><tbody>\n",
    );
    let mut by_f1: Vec<&IntentScores> = scores.iter().collect();
    by_f1.sort_by(|a, b| a.f1.total_cmp(&b.f1));
    for score in by_f1 {
        let _ = writeln!(
            page,
            "<tr><th class=\"row\">{}</th><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td>\
             <td>{}</td><td>{}</td></tr>",
            text(&score.intent),
            score.precision,
            score.recall,
            score.f1,
            score.support,
            score.predicted
        );
    }
    let _ = writeln!(
        page,
        "</tbody></table>\n<h2>Mistakes ({}), most confident first</h2>\
         <table id=\"mistakes\"><thead><tr><th class=\"row\">text</th><th>language</th>\
         <th>expected</th><th>predicted</th><th>confidence</th></tr></thead><tbody>",
        mistakes.len()
    );
    for mistake in mistakes {
        let _ = writeln!(
            page,
            "<tr><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
            text(&mistake.text),
            text(mistake.language.as_deref().unwrap_or("")),
            text(&mistake.expected),
            text(&mistake.predicted),
            mistake.confidence
        );
    }
    page.push_str("</tbody></table></body></html>\n");
    page
}

/// One query of a retrieval evaluation, as the hybrid ranking answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutcome {
    pub query: String,
    pub expected: String,
    /// 1-based rank of the expected entry in the top ten; `None` when it is not there.
    pub rank: Option<usize>,
    /// The entry ranked first, and its text (a FAQ's question).
    pub top: Option<(String, String)>,
}

/// A test example whose language the detector got wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct LanguageMiss {
    pub text: String,
    pub language: String,
    /// Empty when the text has no letters.
    pub detected: String,
    pub confidence: f64,
}

/// Write `languages.csv` into `dir`, the most confident misses first.
pub fn write_languages(dir: &Path, misses: &[LanguageMiss]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut ordered: Vec<&LanguageMiss> = misses.iter().collect();
    ordered.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let path = dir.join("languages.csv");
    let mut writer = csv::Writer::from_path(&path).map_err(csv_error)?;
    writer
        .write_record(["text", "language", "detected", "confidence"])
        .map_err(csv_error)?;
    for miss in ordered {
        writer
            .write_record([
                miss.text.as_str(),
                &miss.language,
                &miss.detected,
                &format!("{:.4}", miss.confidence),
            ])
            .map_err(csv_error)?;
    }
    writer.flush()?;
    Ok(path)
}

/// Write `queries.csv` into `dir`, the misses (not first) before the hits.
pub fn write_retrieval(dir: &Path, outcomes: &[QueryOutcome]) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut ordered: Vec<&QueryOutcome> = outcomes.iter().collect();
    ordered.sort_by_key(|o| std::cmp::Reverse(o.rank.unwrap_or(usize::MAX)));
    let path = dir.join("queries.csv");
    let mut writer = csv::Writer::from_path(&path).map_err(csv_error)?;
    writer
        .write_record([
            "query",
            "expected",
            "rank",
            "ranked_first",
            "ranked_first_text",
        ])
        .map_err(csv_error)?;
    for outcome in ordered {
        let (top, top_text) = outcome
            .top
            .as_ref()
            .map(|(id, text)| (id.as_str(), text.as_str()))
            .unwrap_or(("", ""));
        writer
            .write_record([
                outcome.query.as_str(),
                &outcome.expected,
                &outcome
                    .rank
                    .map(|rank| rank.to_string())
                    .unwrap_or_default(),
                top,
                top_text,
            ])
            .map_err(csv_error)?;
    }
    writer.flush()?;
    Ok(vec![path])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(text: &str, expected: &str, predicted: &str, confidence: f32) -> IntentOutcome {
        IntentOutcome {
            text: text.into(),
            language: Some("en".into()),
            expected: expected.into(),
            predicted: predicted.into(),
            confidence,
        }
    }

    #[test]
    fn scores_and_files_name_each_mistake() {
        let outcomes = vec![
            outcome("refund please", "refund", "refund", 0.9),
            outcome("money back", "refund", "cancel", 0.4),
            outcome("stop it", "cancel", "cancel", 0.8),
            outcome("<b>weather</b> & more", "oos", "refund", 0.7),
        ];
        let scores = intent_scores(&outcomes);
        let refund = scores.iter().find(|s| s.intent == "refund").unwrap();
        assert_eq!((refund.support, refund.predicted), (2, 2));
        assert!((refund.precision - 0.5).abs() < 1e-9);
        assert!((refund.recall - 0.5).abs() < 1e-9);
        let cancel = scores.iter().find(|s| s.intent == "cancel").unwrap();
        assert!((cancel.precision - 0.5).abs() < 1e-9 && (cancel.recall - 1.0).abs() < 1e-9);
        assert!((cancel.f1 - 2.0 / 3.0).abs() < 1e-9);
        let oos = scores.iter().find(|s| s.intent == "oos").unwrap();
        assert_eq!(oos.f1, 0.0);

        let dir = tempfile::tempdir().unwrap();
        let files = write_intents(dir.path(), &outcomes).unwrap();
        assert_eq!(files.len(), 3);
        let mistakes = std::fs::read_to_string(dir.path().join("mistakes.csv")).unwrap();
        let lines: Vec<&str> = mistakes.lines().collect();
        assert_eq!(lines.len(), 3, "{mistakes}");
        // The most confident mistake first.
        assert!(
            lines[1].starts_with("<b>weather</b> & more,en,oos,refund,0.7"),
            "{mistakes}"
        );
        assert!(
            lines[2].starts_with("money back,en,refund,cancel,0.4"),
            "{mistakes}"
        );
        let page = std::fs::read_to_string(dir.path().join("confusion.html")).unwrap();
        assert!(
            page.contains("&lt;b&gt;weather&lt;/b&gt; &amp; more"),
            "escaped"
        );
        assert!(!page.contains("<b>weather"));
        assert!(page.contains("title=\"expected refund, predicted cancel: 1\""));
        assert!(page.contains("2 of 4 test examples right"));
    }

    #[test]
    fn retrieval_misses_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let outcomes = vec![
            QueryOutcome {
                query: "found".into(),
                expected: "a".into(),
                rank: Some(1),
                top: Some(("a".into(), "Question A".into())),
            },
            QueryOutcome {
                query: "lost".into(),
                expected: "b".into(),
                rank: None,
                top: Some(("c".into(), "Question C".into())),
            },
            QueryOutcome {
                query: "third".into(),
                expected: "d".into(),
                rank: Some(3),
                top: Some(("a".into(), "Question A".into())),
            },
        ];
        write_retrieval(dir.path(), &outcomes).unwrap();
        let written = std::fs::read_to_string(dir.path().join("queries.csv")).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines[1], "lost,b,,c,Question C");
        assert_eq!(lines[2], "third,d,3,a,Question A");
        assert_eq!(lines[3], "found,a,1,a,Question A");
    }
}
