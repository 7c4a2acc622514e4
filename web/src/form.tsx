// Forms of the console: run a request, and show the API's error beside
// the input of the field it names (as the create wizard does), or above
// the form when it names none.
import { useEffect, useRef, useState, type ReactNode, type RefObject } from 'react';
import { placeError, type PlacedError } from './lib/forms';
import { ErrorBox } from './ui';

export interface FormState {
  busy: boolean;
  err: unknown;
  placed?: PlacedError;
  // run clears the errors, runs f, and places what it throws.
  run(f: () => Promise<void>): Promise<boolean>;
  // place shows a message at a field, as if the API had named it.
  place(field: string, testId: string, message: string): void;
  clear(): void;
  box: RefObject<HTMLFormElement | null>;
}

export function useForm(fields: readonly string[]): FormState {
  const [busy, setBusy] = useState(false);
  const [err, setErr] = useState<unknown>();
  const [placed, setPlaced] = useState<PlacedError>();
  const box = useRef<HTMLFormElement>(null);
  // Move focus to the input whose error the API named.
  useEffect(() => {
    if (placed) box.current?.querySelector<HTMLElement>(`[data-field="${placed.field}"]`)?.focus();
  }, [placed]);
  const clear = () => {
    setErr(undefined);
    setPlaced(undefined);
  };
  return {
    busy,
    err,
    placed,
    box,
    clear,
    place: (field, testId, message) => setPlaced({ field, testId, message }),
    async run(f) {
      clear();
      setBusy(true);
      try {
        await f();
        return true;
      } catch (x) {
        const p = placeError(x, fields);
        if (p) setPlaced(p);
        else setErr(x);
        return false;
      } finally {
        setBusy(false);
      }
    },
  };
}

export interface InputAttrs {
  id: string;
  'data-field': string;
  'aria-invalid'?: boolean;
  'aria-describedby'?: string;
}

// Field lays out one labelled input with its help and inline error.
export function Field(props: { form: FormState; name: string; label: string; help?: ReactNode; children: (a: InputAttrs) => ReactNode; idPrefix?: string }) {
  const fe = props.form.placed?.field === props.name ? props.form.placed : undefined;
  const id = `${props.idPrefix ?? 'f'}-${props.name.replace(/\W/g, '-')}`;
  const described = [props.help ? `${id}-help` : '', fe ? `${id}-err` : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      {props.children({ id, 'data-field': props.name, 'aria-invalid': fe ? true : undefined, 'aria-describedby': described })}
      {props.help && (
        <small id={`${id}-help`} className="muted help">
          {props.help}
        </small>
      )}
      {fe && (
        <span id={`${id}-err`} className="field-error" data-testid={fe.testId} role="alert">
          {fe.message}
        </span>
      )}
    </div>
  );
}

// FormError is the general error box of a form.
export function FormError({ form, testId }: { form: FormState; testId?: string }) {
  return <ErrorBox err={form.err} testId={testId} />;
}
