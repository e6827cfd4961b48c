"""The AI adviser: prompt, OpenAI client with fallbacks, answer cache, decision validator."""
