// The Telegram Bot API emulator the integration tests run against (tests/it/telegram).
// Usage: node start.js PORT   -> telegram-test-api on 127.0.0.1:PORT, until SIGTERM/SIGINT.
// The tests start one per test and put a small proxy in front of it (tests/it/telegram/peer.rs)
// that gives it the Bot API's real shape where the emulator cuts corners.
const TelegramServer = require('telegram-test-api');

const port = Number(process.argv[2] || process.env.TG_PORT || 9001);
const server = new TelegramServer({ host: '127.0.0.1', port, storeTimeout: 600 });
server.start().then(() => console.log(`telegram-test-api listening on ${server.config.apiURL}`));
const stop = () => server.stop().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
