//! Articles from files: Markdown, HTML or plain text, cut into chunks along their headings.
//!
//! Every chunk keeps the article's source (its path, the key a re-ingest replaces), title and
//! language, and the heading it sits under, so that an answer can cite where it came from.
//! The language comes from front matter (`lang: ca`), a `.ca.md`-style suffix, a `ca/` folder,
//! or else is detected from the text.

use std::path::Path;

use serde::{Deserialize, Serialize};
pub use switchboard_import::{Format, Imported, Section, pack};

use super::KnowledgeError;
use super::language::{LanguageDetector, normalise};

/// Longest chunk in characters; longer sections are split between paragraphs.
pub const DEFAULT_CHUNK_CHARS: usize = 1200;

/// One retrievable passage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The article's key: re-ingesting the same source replaces all its chunks.
    pub source: String,
    pub title: String,
    /// The heading the passage sits under (empty for an article's introduction).
    pub section: String,
    pub language: String,
    pub text: String,
    /// Position of the chunk in its article.
    pub position: usize,
}

impl Chunk {
    /// The article's title, and the section's heading under it.
    pub fn heading(&self) -> String {
        if self.section.is_empty() || self.section == self.title {
            self.title.clone()
        } else {
            format!("{} - {}", self.title, self.section)
        }
    }

    /// What is embedded and indexed: headings carry much of a passage's meaning.
    pub fn indexed_text(&self) -> String {
        format!("{}\n{}", self.heading(), self.text)
    }
}

/// An article ready to index.
#[derive(Debug, Clone)]
pub struct Article {
    pub source: String,
    pub title: String,
    pub language: String,
    pub chunks: Vec<Chunk>,
    /// Content fingerprint: an unchanged article is not re-embedded.
    pub fingerprint: String,
}

/// Parse `content` into an article. `language_hint` wins over detection.
pub fn parse(
    source: &str,
    content: &str,
    format: Format,
    language_hint: Option<&str>,
    detector: &LanguageDetector,
    max_chars: usize,
) -> Result<Article, KnowledgeError> {
    let Imported {
        front,
        title,
        sections,
    } = switchboard_import::read(content, format);
    let title = front
        .get("title")
        .cloned()
        .or(title)
        .unwrap_or_else(|| title_from_source(source));
    let all_text: String = sections
        .iter()
        .flat_map(|section| section.paragraphs.iter())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    if all_text.trim().is_empty() {
        return Err(KnowledgeError::Invalid {
            source_name: source.to_string(),
            message: "no text found".into(),
        });
    }
    let language = match front
        .get("lang")
        .or(front.get("language"))
        .map(String::as_str)
        .or(language_hint)
    {
        Some(tag) => normalise(tag)
            .ok_or_else(|| KnowledgeError::Invalid {
                source_name: source.to_string(),
                message: format!("unsupported language {tag:?} (supported: en, es, ca)"),
            })?
            .to_string(),
        None => detector
            .detect(&format!("{title}\n{all_text}"))
            .map(|detection| detection.language.to_string())
            .unwrap_or_else(|| "en".into()),
    };
    let mut chunks = Vec::new();
    for section in sections {
        for text in pack(&section.paragraphs, max_chars) {
            chunks.push(Chunk {
                source: source.to_string(),
                title: title.clone(),
                section: section.heading.clone(),
                language: language.clone(),
                text,
                position: chunks.len(),
            });
        }
    }
    let fingerprint = fingerprint(&[source, &title, &language, &format!("{max_chars}"), content]);
    Ok(Article {
        source: source.to_string(),
        title,
        language,
        chunks,
        fingerprint,
    })
}

/// Read and parse one file.
pub fn read_file(
    path: &Path,
    source: &str,
    detector: &LanguageDetector,
    max_chars: usize,
) -> Result<Article, KnowledgeError> {
    let format = Format::from_path(path).ok_or_else(|| KnowledgeError::Invalid {
        source_name: source.to_string(),
        message: "unsupported file type (use .md, .markdown, .html, .htm or .txt)".into(),
    })?;
    let content = std::fs::read_to_string(path).map_err(|error| KnowledgeError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    parse(
        source,
        &content,
        format,
        language_from_path(path),
        detector,
        max_chars,
    )
}

/// `shipping.ca.md` or `.../ca/shipping.md` name their language.
pub fn language_from_path(path: &Path) -> Option<&'static str> {
    let stem = path.file_stem()?.to_str()?;
    if let Some((_, suffix)) = stem.rsplit_once('.')
        && let Some(language) = normalise(suffix)
    {
        return Some(language);
    }
    let parent = path.parent()?.file_name()?.to_str()?;
    normalise(parent).filter(|_| parent.len() == 2)
}

fn title_from_source(source: &str) -> String {
    let name = Path::new(source)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or(source);
    let name = name.split('.').next().unwrap_or(name);
    name.replace(['-', '_'], " ")
}

/// A stable 64-bit FNV-1a hash, hex: fingerprints and point ids must not change between runs.
pub fn fingerprint(parts: &[&str]) -> String {
    format!("{:016x}", stable_hash(parts))
}

pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_chunks_follow_headings_and_keep_metadata() {
        let detector = LanguageDetector::default();
        let text = "---\nlang: ca\n---\n# Enviaments\n\nEnviem a tot arreu.\n\n## Terminis\n\nGirona: dos dies.\n\n- Barcelona: un dia\n\n## Preus\n\nGratuït a partir de 50 euros.\n";
        let article = parse(
            "kb/enviaments.md",
            text,
            Format::Markdown,
            None,
            &detector,
            DEFAULT_CHUNK_CHARS,
        )
        .expect("parses");
        assert_eq!(article.title, "Enviaments");
        assert_eq!(article.language, "ca");
        let sections: Vec<&str> = article.chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(sections, vec!["", "Terminis", "Preus"]);
        assert_eq!(
            article.chunks[1].text,
            "Girona: dos dies.\nBarcelona: un dia"
        );
    }

    #[test]
    fn html_and_text_are_read_too() {
        let detector = LanguageDetector::default();
        let html = "<html><head><title>x</title><style>p{}</style></head><body><h1>Returns</h1><p>You can return items within 30 days &amp; free.</p><h2>Damaged items</h2><p>Send us a photo.</p><script>var a=1;</script></body></html>";
        let article =
            parse("returns.html", html, Format::Html, None, &detector, 1200).expect("parses");
        assert_eq!(article.title, "Returns");
        assert_eq!(article.language, "en");
        assert_eq!(article.chunks.len(), 2);
        assert_eq!(
            article.chunks[0].text,
            "You can return items within 30 days & free."
        );
        assert_eq!(article.chunks[1].section, "Damaged items");
        let text = parse(
            "pagos.es.txt",
            "Pagos\n\nAceptamos tarjeta.\n\nY Bizum.",
            Format::Text,
            language_from_path(Path::new("pagos.es.txt")),
            &detector,
            1200,
        )
        .expect("parses");
        assert_eq!(text.title, "Pagos");
        assert_eq!(text.language, "es");
    }

    #[test]
    fn html_entities_of_spanish_and_catalan_articles_decode() {
        let detector = LanguageDetector::default();
        let html = "<!DOCTYPE html><html><head><title>Ignored</title>\
            <script>document.write('&eacute;')</script></head><body>\
            <h1>Pol&iacute;tica de env&iacute;os</h1>\
            <p>Enviamos a toda Espa&ntilde;a: el pedido llega en 48&nbsp;horas, \
            tambi&eacute;n a las Islas Baleares &amp; Canarias.</p>\
            <style>.a { color: red }</style>\
            <h2>Col&middot;lecci&oacute; de tardor</h2>\
            <p>La col&middot;lecci&oacute; nova arriba dem&agrave;; caf&#233; i caf&#xE9; \
            s&#xf3;n el mateix &euro;.</p>\
            <h2>Tarifas &lt;b&gt;</h2><table><tr><td>Pen&iacute;nsula</td><td>gratis</td></tr></table>\
            <p>AT&T &unknownentity; 5 &lt; 6</p>\
            </body></html>";
        let article =
            parse("envios.html", html, Format::Html, None, &detector, 1200).expect("parses");
        assert_eq!(article.title, "Política de envíos");
        let sections: Vec<&str> = article.chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(sections, vec!["", "Col·lecció de tardor", "Tarifas <b>"]);
        assert_eq!(
            article.chunks[0].text,
            "Enviamos a toda España: el pedido llega en 48 horas, también a las Islas Baleares & Canarias."
        );
        assert_eq!(
            article.chunks[1].text,
            "La col·lecció nova arriba demà; café i café són el mateix €."
        );
        assert_eq!(
            article.chunks[2].text,
            "Península gratis\nAT&T &unknownentity; 5 < 6"
        );
        let all: String = article.chunks.iter().map(|c| c.indexed_text()).collect();
        for entity in [
            "&eacute;", "&ntilde;", "&middot;", "&#233;", "&#xE9;", "&nbsp;",
        ] {
            assert!(!all.contains(entity), "{entity} left in {all}");
        }
        assert!(
            !all.contains("document.write") && !all.contains("color"),
            "{all}"
        );
        assert!(!all.contains("Ignored"), "{all}");
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        let detector = LanguageDetector::default();
        let error = parse(
            "empty.md",
            "# Title\n",
            Format::Markdown,
            None,
            &detector,
            100,
        )
        .expect_err("empty");
        assert!(error.to_string().contains("no text"), "{error}");
        let error = parse(
            "x.md",
            "---\nlang: fr\n---\nBonjour",
            Format::Markdown,
            None,
            &detector,
            100,
        )
        .expect_err("french");
        assert!(
            error.to_string().contains("unsupported language"),
            "{error}"
        );
    }

    #[test]
    fn long_sections_are_split_between_paragraphs() {
        let paragraphs = vec!["a".repeat(50), "b".repeat(50), "c".repeat(50)];
        let chunks = pack(&paragraphs, 110);
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|chunk| chunk.chars().count() <= 110));
    }
}
