declare module '*.css';
// A file's text, as Vite's ?raw import gives it (tests read the API's
// OpenAPI document this way).
declare module '*?raw' {
  const text: string;
  export default text;
}
