"use strict";
// A TypeScript sequence: reads temperature readings (NDJSON) and writes them converted to the
// unit given as the first start argument ("F" by default, or "K").
//
// Build and run (the compiled dist/ is a package of its own, with its own package.json):
//   npx tsc                       # src/index.ts -> dist/index.js
//   si seq pack dist -o temperature.tar.gz && si seq send temperature.tar.gz
//   si seq start - K
//   printf '{"sensor":"a","celsius":21.5}\n' | si inst input - -t application/x-ndjson --end
//
// The types of the context are written out here so that the example compiles without
// installing anything else.
Object.defineProperty(exports, "__esModule", { value: true });
exports.default = default_1;
const conversions = {
    F: (celsius) => celsius * 1.8 + 32,
    K: (celsius) => celsius + 273.15,
};
async function* default_1(input, unit = "F") {
    if (unit !== "F" && unit !== "K")
        throw new Error(`unknown unit ${unit}: use F or K`);
    const convert = conversions[unit];
    const digits = this.config.precision ?? 2;
    this.logger.info(`converting to ${unit}`);
    for await (const reading of input) {
        const value = Number(convert(reading.celsius).toFixed(digits));
        yield { sensor: reading.sensor, value, unit };
    }
}
