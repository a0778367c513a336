//! The company's own shop API, as the HTTP order and catalogue sources read it: GET requests
//! to URL templates, an optional bearer token, a 404 meaning "no such thing", and the shop's
//! JSON read through JSON pointers.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Malformed(String),
}

pub struct ShopApi {
    client: reqwest::Client,
    bearer_token: String,
}

impl ShopApi {
    pub fn new(timeout_ms: u64, bearer_token: &str) -> Result<ShopApi, ShopError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms.max(1)))
            .build()
            .map_err(|error| ShopError::Unavailable(error.to_string()))?;
        Ok(ShopApi {
            client,
            bearer_token: bearer_token.to_string(),
        })
    }

    /// The JSON at `url`, or `None` on a 404.
    pub async fn get(&self, url: &str) -> Result<Option<Value>, ShopError> {
        let mut request = self.client.get(url);
        if !self.bearer_token.is_empty() {
            request = request.bearer_auth(&self.bearer_token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| ShopError::Unavailable(error.without_url().to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(ShopError::Unavailable(format!(
                "the shop answered {}",
                response.status()
            )));
        }
        let body = response
            .json::<Value>()
            .await
            .map_err(|error| ShopError::Malformed(error.without_url().to_string()))?;
        Ok(Some(body))
    }
}

/// `template` with `{name}` replaced by `value`, URL-encoded.
pub fn fill(template: &str, name: &str, value: &str) -> String {
    let encoded: String = value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    template.replace(&format!("{{{name}}}"), &encoded)
}

/// Whether `value` may stand for one path segment of a URL template: `.` and `..` would
/// move the request elsewhere on the shop (URL-encoding leaves them as they are).
pub fn path_segment_safe(value: &str) -> bool {
    !value.trim().is_empty() && value != "." && value != ".."
}

/// An amount in cents from a number or a numeric string: integer cents, or decimal units
/// such as 12.50 when `in_cents` is false.
pub fn cents(value: Option<&Value>, in_cents: bool) -> Option<i64> {
    match value? {
        Value::Number(number) if in_cents => number.as_i64(),
        Value::Number(number) => number.as_f64().map(|v| (v * 100.0).round() as i64),
        Value::String(text) if in_cents => text.trim().parse().ok(),
        Value::String(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .map(|v| (v * 100.0).round() as i64),
        _ => None,
    }
}

/// Text at `pointer`: a string as it is, a number or boolean written out.
pub fn text_at(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The array a list response holds: the body itself, or what `pointer` names in it.
pub fn list_at<'a>(body: &'a Value, pointer: &str) -> Option<&'a Vec<Value>> {
    let list = if pointer.is_empty() {
        Some(body)
    } else {
        body.pointer(pointer)
    };
    list.and_then(Value::as_array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_templates_url_encoded() {
        assert_eq!(
            fill("http://s/c?email={email}", "email", "a+b@x.com"),
            "http://s/c?email=a%2Bb%40x.com"
        );
    }

    #[test]
    fn dot_segments_are_not_ids() {
        assert!(path_segment_safe("SOFA-3"));
        assert!(path_segment_safe("a.b"));
        assert!(!path_segment_safe(".."));
        assert!(!path_segment_safe("."));
        assert!(!path_segment_safe(" "));
    }

    #[test]
    fn reads_amounts_in_either_form() {
        assert_eq!(cents(Some(&json!(1250)), true), Some(1250));
        assert_eq!(cents(Some(&json!("12.50")), false), Some(1250));
        assert_eq!(cents(Some(&json!(12.5)), false), Some(1250));
        assert_eq!(cents(Some(&json!("twelve")), false), None);
        assert_eq!(cents(None, true), None);
    }
}
