//! Knowledge articles from files: Markdown, HTML or plain text read into a title, front
//! matter and sections (a heading and its paragraphs), and paragraphs packed into passages.
//!
//! The server's knowledge base (`src/knowledge/document.rs`) adds languages, chunk metadata and
//! fingerprints on top. This part reads untrusted files with two real parsers (pulldown-cmark,
//! html5ever through scraper), so it is a crate of its own that the fuzz targets in `fuzz/`
//! build without the server.

use std::collections::HashMap;
use std::path::Path;

use ego_tree::iter::Edge;
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use scraper::{Html, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Text,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "html" | "htm" => Some(Format::Html),
            "txt" | "text" => Some(Format::Text),
            _ => None,
        }
    }
}

/// A heading and the paragraphs under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Empty for the text before the first heading.
    pub heading: String,
    pub paragraphs: Vec<String>,
}

/// A file read into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// `key: value` lines of a leading `---` block, keys lower-cased.
    pub front: HashMap<String, String>,
    /// The first `h1`, or the first line of a text file.
    pub title: Option<String>,
    /// Sections with at least one paragraph, in order.
    pub sections: Vec<Section>,
}

/// Read `content` as `format`.
pub fn read(content: &str, format: Format) -> Imported {
    let (front, body) = front_matter(content);
    let (title, sections) = match format {
        Format::Markdown => markdown_sections(body),
        Format::Html => html_sections(body),
        Format::Text => text_sections(body),
    };
    Imported {
        front,
        title,
        sections,
    }
}

/// A leading `---` block of `key: value` lines.
pub fn front_matter(content: &str) -> (HashMap<String, String>, &str) {
    let mut map = HashMap::new();
    let trimmed = content.trim_start_matches('\u{feff}');
    let Some(rest) = trimmed.strip_prefix("---\n") else {
        return (map, trimmed);
    };
    let Some(end) = rest.find("\n---") else {
        return (map, trimmed);
    };
    for line in rest[..end].lines() {
        if let Some((key, value)) = line.split_once(':') {
            map.insert(
                key.trim().to_lowercase(),
                value.trim().trim_matches('"').to_string(),
            );
        }
    }
    let body = &rest[end + 4..];
    (map, body.trim_start_matches(['-', '\n']))
}

fn markdown_sections(body: &str) -> (Option<String>, Vec<Section>) {
    let mut title = None;
    let mut sections = vec![Section {
        heading: String::new(),
        paragraphs: Vec::new(),
    }];
    let mut heading: Option<(HeadingLevel, String)> = None;
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, sections: &mut Vec<Section>| {
        let text = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty()
            && let Some(section) = sections.last_mut()
        {
            section.paragraphs.push(text);
        }
        paragraph.clear();
    };
    for event in Parser::new(body) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                flush(&mut paragraph, &mut sections);
                heading = Some((level, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    let text = text.trim().to_string();
                    if level == HeadingLevel::H1 && title.is_none() {
                        title = Some(text);
                    } else {
                        sections.push(Section {
                            heading: text,
                            paragraphs: Vec::new(),
                        });
                    }
                }
            }
            Event::Text(text) | Event::Code(text) => match &mut heading {
                Some((_, heading_text)) => heading_text.push_str(&text),
                None => paragraph.push_str(&text),
            },
            Event::SoftBreak | Event::HardBreak => paragraph.push(' '),
            Event::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::CodeBlock | TagEnd::TableRow) => {
                flush(&mut paragraph, &mut sections)
            }
            Event::End(TagEnd::TableCell) => paragraph.push_str(" | "),
            _ => {}
        }
    }
    flush(&mut paragraph, &mut sections);
    sections.retain(|section| !section.paragraphs.is_empty());
    (title, sections)
}

/// Elements whose content is not article text.
const SKIPPED_ELEMENTS: [&str; 6] = ["head", "script", "style", "template", "noscript", "svg"];

/// Elements that end a paragraph (where they open and where they close).
const BLOCK_ELEMENTS: [&str; 20] = [
    "p",
    "div",
    "li",
    "br",
    "tr",
    "section",
    "article",
    "ul",
    "ol",
    "table",
    "pre",
    "blockquote",
    "dl",
    "dt",
    "dd",
    "header",
    "footer",
    "main",
    "aside",
    "figure",
];

fn heading_level(element: &str) -> Option<u8> {
    match element {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// HTML through a real parser (html5ever, as browsers parse it): every named and numeric
/// entity decodes, broken markup is repaired the standard way, the head, scripts and styles
/// are dropped. Headings start sections (the first `h1` is the title), block elements end
/// paragraphs, table cells are separated by spaces.
fn html_sections(body: &str) -> (Option<String>, Vec<Section>) {
    let document = Html::parse_document(body);
    let mut title = None;
    let mut sections = vec![Section {
        heading: String::new(),
        paragraphs: Vec::new(),
    }];
    let mut text = String::new();
    let mut heading: Option<u8> = None;
    // Depth inside skipped elements; they can nest (an svg in a template).
    let mut skipped = 0usize;
    let flush = |text: &mut String,
                 heading: Option<u8>,
                 sections: &mut Vec<Section>,
                 title: &mut Option<String>| {
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ");
        text.clear();
        if clean.is_empty() {
            return;
        }
        match heading {
            Some(1) if title.is_none() => *title = Some(clean),
            Some(_) => sections.push(Section {
                heading: clean,
                paragraphs: Vec::new(),
            }),
            None => {
                if let Some(section) = sections.last_mut() {
                    section.paragraphs.push(clean);
                }
            }
        }
    };
    for edge in document.tree.root().traverse() {
        let (node, opening) = match edge {
            Edge::Open(node) => (node, true),
            Edge::Close(node) => (node, false),
        };
        let element = match node.value() {
            Node::Text(content) if opening && skipped == 0 => {
                text.push_str(content);
                continue;
            }
            Node::Element(element) => element.name(),
            _ => continue,
        };
        if SKIPPED_ELEMENTS.contains(&element) {
            if opening {
                skipped += 1;
            } else {
                skipped -= 1;
            }
            continue;
        }
        if skipped > 0 {
            continue;
        }
        if let Some(level) = heading_level(element) {
            flush(&mut text, heading, &mut sections, &mut title);
            heading = opening.then_some(level);
        } else if BLOCK_ELEMENTS.contains(&element) {
            flush(&mut text, heading, &mut sections, &mut title);
        } else if element == "td" || element == "th" {
            text.push(' ');
        }
    }
    flush(&mut text, heading, &mut sections, &mut title);
    sections.retain(|section| !section.paragraphs.is_empty());
    (title, sections)
}

/// Plain text: the first line is the title; paragraphs are separated by blank lines.
fn text_sections(body: &str) -> (Option<String>, Vec<Section>) {
    let mut lines = body.lines().skip_while(|line| line.trim().is_empty());
    let title = lines.next().map(|line| line.trim().to_string());
    let rest: Vec<&str> = lines.collect();
    let paragraphs = rest
        .join("\n")
        .split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|paragraph| !paragraph.is_empty())
        .collect();
    (
        title,
        vec![Section {
            heading: String::new(),
            paragraphs,
        }],
    )
}

/// Group paragraphs into chunks of at most `max_chars` (a longer paragraph is cut at words).
pub fn pack(paragraphs: &[String], max_chars: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    for paragraph in paragraphs {
        let pieces: Vec<String> = if paragraph.chars().count() <= max_chars {
            vec![paragraph.clone()]
        } else {
            let mut pieces = Vec::new();
            let mut piece = String::new();
            for word in paragraph.split_whitespace() {
                if piece.chars().count() + word.chars().count() + 1 > max_chars && !piece.is_empty()
                {
                    pieces.push(std::mem::take(&mut piece));
                }
                if !piece.is_empty() {
                    piece.push(' ');
                }
                piece.push_str(word);
            }
            if !piece.is_empty() {
                pieces.push(piece);
            }
            pieces
        };
        for piece in pieces {
            if !current.is_empty()
                && current.chars().count() + piece.chars().count() + 1 > max_chars
            {
                chunks.push(std::mem::take(&mut current));
            }
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&piece);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}
