// SPDX-License-Identifier: MIT
// Drive rbee-workerd with the official OpenAI Node client, unchanged:
//   node openai-stream.cjs BASE_URL MODEL
// Streams a chat completion (with usage), makes the same request without
// streaming, lists the models, and prints one line "RESULT {json}" for
// tests/test-worker.c to check.
'use strict';

const OpenAI = require('openai');

async function main() {
        const [baseURL, model] = process.argv.slice(2);
        const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
        const messages = [
                { role: 'system', content: 'You tell short stories.' },
                { role: 'user', content: 'Once upon a time' },
        ];

        const stream = await client.chat.completions.create({
                model, messages, max_tokens: 16, temperature: 0, stream: true,
                stream_options: { include_usage: true },
        });
        let chunks = 0, streamText = '', finish = null, usage = null;
        for await (const chunk of stream) {
                chunks++;
                if (chunk.usage)
                        usage = chunk.usage;
                const c = chunk.choices[0];
                if (!c)
                        continue;
                if (c.delta && c.delta.content)
                        streamText += c.delta.content;
                if (c.finish_reason)
                        finish = c.finish_reason;
        }

        const full = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
        const list = await client.models.list();
        const models = [];
        for await (const m of list)
                models.push(m.id);

        console.log('RESULT ' + JSON.stringify({
                stream_chunks: chunks,
                stream_text: streamText,
                text: full.choices[0].message.content,
                finish_reason: finish,
                usage,
                models,
        }));
}

main().catch((e) => {
        console.error('openai client error:', e && e.stack ? e.stack : e);
        process.exit(1);
});
