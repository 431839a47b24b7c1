// The generator of the user's guide: `si seq start - 3000 10`, then `si inst output -`
// prints 3000 ... 3009, one per line.
//
// As STH calls every sequence, the first argument is the input stream and the start
// arguments follow it. Over the CLI arguments arrive as strings, so they are made numbers
// before counting (the guide's version would compare against "3000" + "10").
module.exports = async function* (_input, initialNumber = 0, length = 1000) {
  const first = Number(initialNumber);
  for (let i = first; i < first + Number(length); i++) yield i;
};
