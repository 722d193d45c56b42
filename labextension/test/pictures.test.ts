// A browser's output whose widget is gone shows its saved picture: only marked outputs with a picture change, and
// only when their widget model is neither in the kernel nor in the notebook's saved widget state.

import { describe, expect, it } from 'vitest';

import { IOutputLike, IOutputsLike, PICTURE_MARK, WIDGET_MIME, pictureWidgetId, showPictures } from '../src/pictures';

type OutputJSON = ReturnType<IOutputLike['toJSON']>;

function output(json: OutputJSON): IOutputLike {
  return { data: json.data ?? {}, metadata: json.metadata ?? {}, toJSON: () => structuredClone(json) };
}

function outputs(list: OutputJSON[]): IOutputsLike & { list: OutputJSON[] } {
  return {
    list,
    get length() {
      return list.length;
    },
    get: index => output(list[index]),
    set: (index, value) => {
      list[index] = value;
    }
  };
}

function browserOutput(id: string, marked = true): OutputJSON {
  return {
    output_type: 'display_data',
    data: { [WIDGET_MIME]: { model_id: id, version_major: 2 }, 'image/png': 'iVBOR', 'text/plain': 'browser' },
    metadata: marked ? { [PICTURE_MARK]: { picture: 'image/png' } } : {}
  };
}

describe('pictureWidgetId', () => {
  it('names the widget of a marked output with a picture', () => {
    expect(pictureWidgetId(output(browserOutput('a1')))).toBe('a1');
    expect(pictureWidgetId(output(browserOutput('a1', false)))).toBeNull();
    expect(pictureWidgetId(output({ output_type: 'stream', data: {}, metadata: {} }))).toBeNull();
  });
});

describe('showPictures', () => {
  it('drops the widget of a gone browser so its picture shows, and keeps every other output', () => {
    const stream: OutputJSON = { output_type: 'stream', data: {}, metadata: {} };
    const area = outputs([stream, browserOutput('gone'), browserOutput('live'), browserOutput('other', false)]);
    expect(showPictures(area, new Set(['live']))).toBe(1);
    expect(area.list[0]).toBe(stream);
    expect(Object.keys(area.list[1].data ?? {}).sort()).toEqual(['image/png', 'text/plain']);
    expect(area.list[1].metadata).toEqual({ [PICTURE_MARK]: { picture: 'image/png' } });
    expect(area.list[2].data?.[WIDGET_MIME]).toEqual({ model_id: 'live', version_major: 2 });
    expect(area.list[3].data?.[WIDGET_MIME]).toEqual({ model_id: 'other', version_major: 2 });
  });
});
