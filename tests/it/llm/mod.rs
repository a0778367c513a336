//! LLM mode: the OpenAI-compatible client against a scripted fake that speaks the wire format,
//! and against a real llama.cpp server.

mod assistant;
mod client;
pub(crate) mod fake;
mod measures;
mod real;
