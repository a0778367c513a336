//! LLM mode: the OpenAI-compatible client against a scripted fake that speaks the wire format,
//! and against a real llama.cpp server.

mod client;
mod fake;
mod real;
