#!/usr/bin/env node
// Real MCP client built on the TypeScript SDK v1 (`@modelcontextprotocol/sdk`).
//
// Usage:
//   node client_v1.mjs --url URL [--transport streamable|sse] [--protocol 2025-11-25]
//                      [--token T] [--call NAME [--args JSON]] [--timeout-ms N]
//
// Connects, runs tools/list, optionally tools/call, closes, and prints ONE JSON object on stdout:
//   {"protocolVersion": ..., "era": "legacy", "serverName": ..., "tools": [...], "call": <CallToolResult|null>}
// Exit codes: 0 ok, 1 runtime failure (connect/list/call/close), 2 bad arguments, 3 unsupported combination.
//
// The v1 SDK only speaks the initialize-handshake era: Client.connect() always sends `initialize` with
// LATEST_PROTOCOL_VERSION ('2025-11-25' in 1.32.x) and there is no `server/discover` / 2026-07-28 support anywhere in
// the package, so any other --protocol is refused with exit code 3.
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;
const EXIT_UNSUPPORTED = 3;
const KNOWN_PROTOCOLS = new Set(['2025-11-25', '2026-07-28', 'auto']);
const TRANSPORTS = new Set(['streamable', 'sse']);

class UsageError extends Error {
    constructor(message, exitCode = EXIT_USAGE) {
        super(message);
        this.exitCode = exitCode;
    }
}

function parseCli(argv) {
    let values;
    try {
        ({ values } = parseArgs({
            args: argv,
            strict: true,
            allowPositionals: false,
            options: {
                url: { type: 'string' },
                transport: { type: 'string', default: 'streamable' },
                protocol: { type: 'string', default: LATEST_PROTOCOL_VERSION },
                token: { type: 'string' },
                call: { type: 'string' },
                args: { type: 'string' },
                'timeout-ms': { type: 'string', default: '30000' }
            }
        }));
    } catch (error) {
        throw new UsageError(error.message);
    }
    if (!values.url) throw new UsageError('--url is required');
    let url;
    try {
        url = new URL(values.url);
    } catch {
        throw new UsageError(`--url is not a valid URL: ${values.url}`);
    }
    if (!TRANSPORTS.has(values.transport)) {
        throw new UsageError(`--transport must be one of ${[...TRANSPORTS].join(', ')}, got ${values.transport}`);
    }
    if (values.protocol !== LATEST_PROTOCOL_VERSION) {
        const known = KNOWN_PROTOCOLS.has(values.protocol) ? '' : ' (unknown protocol)';
        throw new UsageError(
            `@modelcontextprotocol/sdk v1 cannot speak --protocol ${values.protocol}${known}: its Client always ` +
                `offers LATEST_PROTOCOL_VERSION=${LATEST_PROTOCOL_VERSION} in \`initialize\` and has no ` +
                '2026-07-28 (server/discover) era support; use client_v2.mjs for that',
            EXIT_UNSUPPORTED
        );
    }
    if (values.args !== undefined && values.call === undefined) throw new UsageError('--args requires --call');
    let toolArgs = {};
    if (values.args !== undefined) {
        try {
            toolArgs = JSON.parse(values.args);
        } catch (error) {
            throw new UsageError(`--args is not valid JSON: ${error.message}`);
        }
        if (toolArgs === null || typeof toolArgs !== 'object' || Array.isArray(toolArgs)) {
            throw new UsageError('--args must be a JSON object');
        }
    }
    const timeoutMs = Number.parseInt(values['timeout-ms'], 10);
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout-ms must be a positive integer');
    return { url, transport: values.transport, token: values.token, call: values.call, toolArgs, timeoutMs };
}

function makeTransport(opts) {
    // In 1.32.x both transports merge `requestInit.headers` into _commonHeaders(), which is used for every request:
    // Streamable HTTP POST/GET/DELETE, and for SSE the EventSource GET (the transport passes its own `fetch` to
    // EventSource and sets the headers there) as well as each message POST.
    const headers = opts.token === undefined ? {} : { Authorization: `Bearer ${opts.token}` };
    const requestInit = { headers };
    if (opts.transport === 'sse') return new SSEClientTransport(opts.url, { requestInit });
    return new StreamableHTTPClientTransport(opts.url, {
        requestInit,
        // A test harness must fail fast, not silently retry.
        reconnectionOptions: {
            maxReconnectionDelay: 1000,
            initialReconnectionDelay: 100,
            reconnectionDelayGrowFactor: 1.5,
            maxRetries: 0
        }
    });
}

async function listAllTools(client, timeout) {
    const names = [];
    let cursor;
    do {
        const page = await client.listTools(cursor === undefined ? undefined : { cursor }, { timeout });
        for (const tool of page.tools) names.push(tool.name);
        cursor = page.nextCursor;
    } while (cursor);
    return names;
}

let phase = 'start';

async function run(opts) {
    const client = new Client({ name: 'datapulse-interop-v1', version: '0.0.0' }, { capabilities: {} });
    const transport = makeTransport(opts);
    // v1's Client has no getter for the negotiated version; it hands the initialize result's protocolVersion to
    // transport.setProtocolVersion() (both HTTP transports implement it), so record it there.
    let negotiated = null;
    const setProtocolVersion = transport.setProtocolVersion.bind(transport);
    transport.setProtocolVersion = version => {
        negotiated = version;
        setProtocolVersion(version);
    };
    let asyncError;
    client.onerror = error => {
        asyncError ??= error;
    };
    phase = `connect (${opts.transport})`;
    await client.connect(transport, { timeout: opts.timeoutMs });
    let result;
    let failure;
    try {
        phase = 'tools/list';
        const tools = await listAllTools(client, opts.timeoutMs);
        let call = null;
        if (opts.call !== undefined) {
            phase = 'tools/call';
            call = await client.callTool({ name: opts.call, arguments: opts.toolArgs }, undefined, {
                timeout: opts.timeoutMs
            });
        }
        result = {
            protocolVersion: negotiated,
            era: 'legacy',
            serverName: client.getServerVersion()?.name ?? null,
            tools,
            call
        };
    } catch (error) {
        failure = error;
    }
    phase = 'close';
    try {
        // Close cleanly: end the server-side session (streamable HTTP with a session id), then the client.
        if (transport instanceof StreamableHTTPClientTransport && transport.sessionId !== undefined) {
            await transport.terminateSession();
        }
        await client.close();
    } catch (closeError) {
        if (failure === undefined) throw closeError;
        process.stderr.write(`warning: close failed after an earlier error: ${closeError?.stack ?? closeError}\n`);
    }
    if (asyncError !== undefined) {
        process.stderr.write(`warning: transport reported an error: ${asyncError?.stack ?? asyncError}\n`);
    }
    if (failure !== undefined) throw failure;
    return result;
}

function safeJson(value) {
    try {
        return JSON.stringify(value);
    } catch {
        return String(value);
    }
}

function fail(error) {
    const code = error instanceof UsageError ? error.exitCode : EXIT_RUNTIME;
    const detail = error instanceof UsageError ? error.message : (error?.stack ?? String(error));
    process.stderr.write(`client_v1: ${detail}\n`);
    // SDK errors carry the HTTP status / JSON-RPC code outside the message (e.g. v1 StreamableHTTPError.code).
    for (const key of ['code', 'status', 'data']) {
        if (error?.[key] !== undefined) process.stderr.write(`${key}: ${safeJson(error[key])}\n`);
    }
    if (error?.cause) process.stderr.write(`caused by: ${error.cause?.stack ?? error.cause}\n`);
    process.exit(code);
}

try {
    const opts = parseCli(process.argv.slice(2));
    // Whole-run watchdog: per-request timeouts do not cover e.g. an SSE stream that never sends its endpoint event.
    setTimeout(() => {
        process.stderr.write(`client_v1: gave up after ${opts.timeoutMs} ms (--timeout-ms) during ${phase}\n`);
        process.exit(EXIT_RUNTIME);
    }, opts.timeoutMs).unref();
    const result = await run(opts);
    // Exit explicitly once stdout is flushed so lingering keep-alive sockets can never hang the harness.
    process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
} catch (error) {
    fail(error);
}
