#!/usr/bin/env node
// Real MCP client built on the TypeScript SDK v2 (`@modelcontextprotocol/client`).
//
// Usage:
//   node client_v2.mjs --url URL [--transport streamable|sse] [--protocol 2025-11-25|2026-07-28|auto]
//                      [--token T] [--call NAME [--args JSON]] [--timeout-ms N]
//
// Connects, runs tools/list, optionally tools/call, closes, and prints ONE JSON object on stdout:
//   {"protocolVersion": ..., "era": ..., "serverName": ..., "tools": [...], "call": <CallToolResult|null>}
// Exit codes: 0 ok, 1 runtime failure (connect/list/call/close), 2 bad arguments, 3 unsupported combination.
//
// Era selection (from the package's own ClientOptions.versionNegotiation):
//   2025-11-25 -> mode 'legacy' (default): plain `initialize` handshake, offers LATEST_PROTOCOL_VERSION.
//   2026-07-28 -> mode { pin: '2026-07-28' }: `server/discover` probe, stateless modern era, NO fallback.
//   auto       -> mode 'auto': probe with `server/discover`, fall back to `initialize` on legacy evidence.
// The negotiation is transport-agnostic in this package (anything that is not the stdio transport probes "in place",
// see detectProbeTransportKind), so the modern era is also attempted over the deprecated HTTP+SSE transport; whether
// that works is up to the server. Note the SSE transport does not add the body-derived MCP-Protocol-Version /
// Mcp-Method headers that the Streamable HTTP transport adds to modern-era requests.
import { parseArgs } from 'node:util';

import {
    Client,
    LATEST_PROTOCOL_VERSION,
    SSEClientTransport,
    StreamableHTTPClientTransport
} from '@modelcontextprotocol/client';

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;
const EXIT_UNSUPPORTED = 3;
const MODERN_VERSION = '2026-07-28';
const PROTOCOLS = new Set([LATEST_PROTOCOL_VERSION, MODERN_VERSION, 'auto']);
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
    if (!PROTOCOLS.has(values.protocol)) {
        throw new UsageError(
            `--protocol must be one of ${[...PROTOCOLS].join(', ')} for @modelcontextprotocol/client, got ${values.protocol}`,
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
    return {
        url,
        transport: values.transport,
        protocol: values.protocol,
        token: values.token,
        call: values.call,
        toolArgs,
        timeoutMs
    };
}

function versionNegotiationFor(protocol) {
    if (protocol === 'auto') return { mode: 'auto' };
    if (protocol === MODERN_VERSION) return { mode: { pin: MODERN_VERSION } };
    return { mode: 'legacy' };
}

function makeTransport(opts) {
    // `requestInit.headers` is merged into the transport's _commonHeaders(), which both transports use for
    // every request they make: Streamable HTTP POST/GET/DELETE, and for SSE the EventSource GET (through the
    // transport's own fetch wrapper) as well as each message POST.
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
    const client = new Client(
        { name: 'datapulse-interop-v2', version: '0.0.0' },
        { capabilities: {}, versionNegotiation: versionNegotiationFor(opts.protocol) }
    );
    const transport = makeTransport(opts);
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
            call = await client.callTool({ name: opts.call, arguments: opts.toolArgs }, { timeout: opts.timeoutMs });
        }
        result = {
            protocolVersion: client.getNegotiatedProtocolVersion() ?? null,
            era: client.getProtocolEra() ?? null,
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
    process.stderr.write(`client_v2: ${detail}\n`);
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
        process.stderr.write(`client_v2: gave up after ${opts.timeoutMs} ms (--timeout-ms) during ${phase}\n`);
        process.exit(EXIT_RUNTIME);
    }, opts.timeoutMs).unref();
    const result = await run(opts);
    // Exit explicitly once stdout is flushed so lingering keep-alive sockets can never hang the harness.
    process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
} catch (error) {
    fail(error);
}
