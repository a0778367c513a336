//! LLM mode: the OpenAI-compatible client against a scripted fake that speaks the wire format.

mod client;
mod fake;
