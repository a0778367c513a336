//! The prompt templates of `prompts/` (see its README): loaded once, checked by rendering each
//! with sample values at start-up, and rendered per language.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use crate::assistant::AssistantError;

/// The templates every prompts folder must hold.
const TEMPLATES: [&str; 3] = ["system", "handoff_summary", "sources"];
const LANGUAGES: [(&str, &str); 3] = [("en", "English"), ("es", "Spanish"), ("ca", "Catalan")];

/// A passage as the prompts see it, numbered as the model cites it.
#[derive(Debug, Clone, Serialize)]
pub struct PromptPassage {
    pub n: usize,
    pub title: String,
    pub section: String,
    pub source: String,
    pub text: String,
}

/// One line of a conversation, for the handoff summary.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub who: &'static str,
    pub text: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    pub description: String,
    #[serde(default)]
    pub arguments: BTreeMap<String, Described>,
}

/// `tools.toml`: what the model is told about each tool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolTexts {
    #[serde(default)]
    pub tools: BTreeMap<String, Described>,
    #[serde(default)]
    pub tasks: BTreeMap<String, Described>,
    #[serde(default)]
    pub slots: BTreeMap<String, Described>,
}

pub struct Prompts {
    env: Environment<'static>,
    company: String,
    pub tools: ToolTexts,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts")
            .field("templates", &self.env.templates().count())
            .finish_non_exhaustive()
    }
}

fn config_error(path: &Path, error: impl std::fmt::Display) -> AssistantError {
    AssistantError::Config(format!("{}: {error}", path.display()))
}

impl Prompts {
    /// Every `*.j2` of `dir` and its `tools.toml`; each template is rendered once with sample
    /// values, so a mistake stops the start with the file's name.
    pub fn load(dir: &Path, company: &str) -> Result<Prompts, AssistantError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Plain text, not HTML: nothing is escaped.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(false);
        let entries = std::fs::read_dir(dir).map_err(|error| config_error(dir, error))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|extension| extension == "j2"))
            .collect();
        paths.sort();
        for path in &paths {
            let name = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .ok_or_else(|| config_error(path, "not a UTF-8 file name"))?
                .to_string();
            let source =
                std::fs::read_to_string(path).map_err(|error| config_error(path, error))?;
            env.add_template_owned(name, source)
                .map_err(|error| config_error(path, error))?;
        }
        let tools_path = dir.join("tools.toml");
        let tools_text = std::fs::read_to_string(&tools_path)
            .map_err(|error| config_error(&tools_path, error))?;
        let tools: ToolTexts =
            toml::from_str(&tools_text).map_err(|error| config_error(&tools_path, error))?;
        let prompts = Prompts {
            env,
            company: company.to_string(),
            tools,
        };
        for name in TEMPLATES {
            if prompts.env.get_template(name).is_err() {
                return Err(config_error(&dir.join(format!("{name}.j2")), "missing"));
            }
        }
        for (language, _) in LANGUAGES {
            prompts.system(language, true, &[sample_passage()])?;
            prompts.system(language, false, &[])?;
            prompts.sources(language, &[sample_passage()])?;
        }
        prompts.handoff_summary(
            "customer_request",
            &[Line {
                who: "Customer",
                text: "sample".into(),
            }],
        )?;
        Ok(prompts)
    }

    /// The system prompt for a customer writing in `language`, with the passages retrieved.
    pub fn system(
        &self,
        language: &str,
        verified: bool,
        passages: &[PromptPassage],
    ) -> Result<String, AssistantError> {
        self.render(
            "system",
            language,
            minijinja::context! {
                company => &self.company,
                language => language,
                language_name => language_name(language),
                verified => verified,
                passages => passages,
            },
        )
    }

    /// The line naming the passages an answer cites.
    pub fn sources(
        &self,
        language: &str,
        cited: &[PromptPassage],
    ) -> Result<String, AssistantError> {
        self.render("sources", language, minijinja::context! { cited => cited })
    }

    /// The request for a summary for the people taking over.
    pub fn handoff_summary(
        &self,
        reason: &str,
        conversation: &[Line],
    ) -> Result<String, AssistantError> {
        self.render(
            "handoff_summary",
            "en",
            minijinja::context! {
                company => &self.company,
                reason => reason,
                conversation => conversation,
            },
        )
    }

    /// `NAME.LANG` if the folder has it, else `NAME`.
    fn render(
        &self,
        name: &str,
        language: &str,
        context: minijinja::Value,
    ) -> Result<String, AssistantError> {
        let localised = format!("{name}.{language}");
        let template = self
            .env
            .get_template(&localised)
            .or_else(|_| self.env.get_template(name))
            .map_err(|error| AssistantError::Config(format!("prompt {name}: {error}")))?;
        let text = template
            .render(context)
            .map_err(|error| AssistantError::Config(format!("prompt {name}: {error:#}")))?;
        Ok(text.trim().to_string())
    }
}

fn language_name(language: &str) -> &'static str {
    LANGUAGES
        .iter()
        .find(|(code, _)| *code == language)
        .map(|(_, name)| *name)
        .unwrap_or("English")
}

fn sample_passage() -> PromptPassage {
    PromptPassage {
        n: 1,
        title: "Title".into(),
        section: "Section".into(),
        source: "source.md".into(),
        text: "Text.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Prompts {
        Prompts::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts"),
            "Demo Shop",
        )
        .expect("the shipped prompts load")
    }

    fn passages() -> Vec<PromptPassage> {
        vec![
            PromptPassage {
                n: 1,
                title: "Returns and refunds".into(),
                section: "How long do I have?".into(),
                source: "config/demo/knowledge/returns.md".into(),
                text: "You can return an item within 30 days of delivery.".into(),
            },
            PromptPassage {
                n: 2,
                title: "Shipping".into(),
                section: "Shipping".into(),
                source: "config/demo/knowledge/shipping.md".into(),
                text: "Orders ship within two working days.".into(),
            },
        ]
    }

    #[test]
    fn system_prompt_in_each_language() {
        let prompts = shipped();
        for (language, _) in LANGUAGES {
            insta::assert_snapshot!(
                format!("system_{language}"),
                prompts.system(language, true, &passages()).unwrap()
            );
        }
        insta::assert_snapshot!(
            "system_en_guest_no_passages",
            prompts.system("en", false, &[]).unwrap()
        );
    }

    #[test]
    fn sources_and_summary() {
        let prompts = shipped();
        for (language, _) in LANGUAGES {
            insta::assert_snapshot!(
                format!("sources_{language}"),
                prompts.sources(language, &passages()).unwrap()
            );
        }
        let conversation = [
            Line {
                who: "Customer",
                text: "The kettle from order 1043 leaks, I want my money back".into(),
            },
            Line {
                who: "Assistant",
                text: "I have asked for a refund of order 1043.".into(),
            },
        ];
        insta::assert_snapshot!(
            "handoff_summary",
            prompts
                .handoff_summary("customer_request", &conversation)
                .unwrap()
        );
    }

    #[test]
    fn a_broken_template_stops_the_start_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join("sources.es.j2"), "{{ nobody }}").unwrap();
        let error = Prompts::load(dir.path(), "Demo Shop")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sources"), "{error}");
        std::fs::remove_file(dir.path().join("sources.es.j2")).unwrap();
        std::fs::remove_file(dir.path().join("system.j2")).unwrap();
        let error = Prompts::load(dir.path(), "Demo Shop")
            .unwrap_err()
            .to_string();
        assert!(error.contains("system.j2"), "{error}");
    }
}
